//! The consultation service: roles, waiting room, who sees whom. (Being written.)
use crate::config::Config;
use std::sync::Arc;
use teleconsult_sfu::Sfu;

#[derive(Clone)]
pub struct ConsultationService {
    pub config: Arc<Config>,
    pub sfu: Sfu,
}

impl ConsultationService {
    pub fn new(config: Arc<Config>, sfu: Sfu) -> Self {
        ConsultationService { config, sfu }
    }
}
