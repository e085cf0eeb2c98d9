//! Document types detected from a file's first bytes (magic numbers), never from the client's
//! `Content-Type` or file name; and file names made safe to store and to send back.

/// How many leading bytes [`detect`] wants to see (fewer only if the file is shorter).
pub const SNIFF_BYTES: usize = 4096;

/// A document type we know how to recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Pdf,
    Png,
    Jpeg,
    Webp,
    Text,
    Dicom,
}

impl FileType {
    /// The name used in `documents.allowed_types`.
    pub fn name(self) -> &'static str {
        match self {
            FileType::Pdf => "pdf",
            FileType::Png => "png",
            FileType::Jpeg => "jpeg",
            FileType::Webp => "webp",
            FileType::Text => "text",
            FileType::Dicom => "dicom",
        }
    }

    /// The `Content-Type` a download is served with.
    pub fn mime(self) -> &'static str {
        match self {
            FileType::Pdf => "application/pdf",
            FileType::Png => "image/png",
            FileType::Jpeg => "image/jpeg",
            FileType::Webp => "image/webp",
            FileType::Text => "text/plain; charset=utf-8",
            FileType::Dicom => "application/dicom",
        }
    }

    /// Every known type.
    pub const ALL: [FileType; 6] = [
        FileType::Pdf,
        FileType::Png,
        FileType::Jpeg,
        FileType::Webp,
        FileType::Text,
        FileType::Dicom,
    ];

    pub fn from_name(name: &str) -> Option<FileType> {
        FileType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The type of a file from its first bytes: `head` holds the first [`SNIFF_BYTES`] bytes, or
/// the whole file if shorter. Binary formats are checked first, with [`infer`]'s matchers for
/// PNG, JPEG, WebP (inside a RIFF container) and DICOM (`DICM` after the 128-byte preamble);
/// PDF must start with `%PDF-` (infer also accepts the header anywhere in the first KiB, which
/// would make a text note mentioning it a PDF). Plain text (which infer does not detect) is
/// valid UTF-8 without NUL or control characters other than tab, CR and LF in `head` (a
/// multi-byte character cut at the end of `head` is allowed). An empty file is not a document.
pub fn detect(head: &[u8]) -> Option<FileType> {
    if head.starts_with(b"%PDF-") {
        return Some(FileType::Pdf);
    }
    if infer::image::is_png(head) {
        return Some(FileType::Png);
    }
    if infer::image::is_jpeg(head) {
        return Some(FileType::Jpeg);
    }
    if head.starts_with(b"RIFF") && infer::image::is_webp(head) {
        return Some(FileType::Webp);
    }
    if infer::archive::is_dcm(head) {
        return Some(FileType::Dicom);
    }
    if !head.is_empty() && is_text(head) {
        return Some(FileType::Text);
    }
    None
}

fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        // Only an incomplete character at the very end is acceptable (the block boundary).
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            // Safe: `valid_up_to` is a char boundary by definition.
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'))
}

/// Longest stored file name, in bytes (UTF-8).
pub const MAX_FILENAME_BYTES: usize = 150;
/// Longest extension kept when a name is shortened.
const MAX_EXTENSION_BYTES: usize = 16;

/// Names Windows refuses (with or without an extension).
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A file name safe to store, list and offer for download: the last path component only (both
/// `/` and `\` separate), without control characters, bidirectional overrides or other
/// invisible format characters, without leading dots or trailing dots and spaces, not a
/// reserved device name, at most [`MAX_FILENAME_BYTES`] bytes (the extension is kept). Falls
/// back to `document`.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_invisible_format(c))
        .map(|c| match c {
            // Characters that are special in headers or on common file systems.
            ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c => c,
        })
        .collect();
    let mut name = cleaned
        .trim_matches(|c: char| c.is_whitespace())
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .to_string();
    let stem = name.split('.').next().unwrap_or("").trim();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        name.insert(0, '_');
    }
    if name.len() > MAX_FILENAME_BYTES {
        name = shorten(&name);
    }
    if name.is_empty() || name.chars().all(|c| c == '.' || c == '_') {
        return "document".to_string();
    }
    name
}

/// Cut `name` to [`MAX_FILENAME_BYTES`] on a character boundary, keeping a short extension.
fn shorten(name: &str) -> String {
    let ext = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= MAX_EXTENSION_BYTES => &name[i..],
        _ => "",
    };
    let mut budget = MAX_FILENAME_BYTES - ext.len();
    let stem = &name[..name.len() - ext.len()];
    while !stem.is_char_boundary(budget.min(stem.len())) {
        budget -= 1;
    }
    let stem = stem[..budget.min(stem.len())].trim_end_matches(['.', ' ']);
    format!("{stem}{ext}")
}

/// Bidi controls and other zero-width format characters that can disguise a name
/// (`invoice\u{202E}fdp.exe` displays as `invoiceexe.pdf`).
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}' // LRE, RLE, PDF, LRO, RLO
        | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, LRI, RLI, FSI, PDI
        | '\u{FEFF}' // BOM / zero-width no-break space
        | '\u{061C}' // Arabic letter mark
        | '\u{FFF9}'..='\u{FFFB}') // interlinear annotation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_magic_bytes() {
        assert_eq!(detect(b"%PDF-1.7\n..."), Some(FileType::Pdf));
        assert_eq!(
            detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(FileType::Png)
        );
        assert_eq!(
            detect(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Some(FileType::Jpeg)
        );
        assert_eq!(detect(b"RIFF\x24\0\0\0WEBPVP8 "), Some(FileType::Webp));
        assert_eq!(detect(b"RIFF\x24\0\0\0WAVEfmt "), None);
        assert_eq!(detect(b"RIFX\x24\0\0\0WEBPVP8 \x80"), None);
        assert_eq!(
            detect(b"notes: see %PDF-1.7 spec"),
            Some(FileType::Text),
            "a text mentioning the PDF header is text"
        );
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM\x02\x00\x00\x00");
        assert_eq!(detect(&dicom), Some(FileType::Dicom));
        assert_eq!(detect(&dicom[..130]), None);
        assert_eq!(
            detect("Blood pressure 120/80\r\n\tnormal — ok ✓\n".as_bytes()),
            Some(FileType::Text)
        );
        // An executable, whatever it is called.
        assert_eq!(detect(b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff"), None);
        assert_eq!(detect(b"\x7fELF\x02\x01\x01\0"), None);
        assert_eq!(detect(b"text with a NUL\0 inside"), None);
        assert_eq!(detect(b"escape \x1b[31m"), None);
        assert_eq!(detect(b"\xff\xfe not utf-8"), None);
        assert_eq!(detect(b""), None);
        // A character cut by the block boundary is still text; a broken one is not.
        let s = "abc é".as_bytes();
        assert_eq!(detect(&s[..s.len() - 1]), Some(FileType::Text));
        assert_eq!(detect(b"abc \xc3 def"), None);
    }

    #[test]
    fn names_and_mimes() {
        for t in FileType::ALL {
            assert_eq!(FileType::from_name(t.name()), Some(t));
        }
        assert_eq!(FileType::from_name("exe"), None);
        assert_eq!(FileType::Pdf.mime(), "application/pdf");
    }

    #[test]
    fn sanitizes_filenames() {
        assert_eq!(sanitize_filename("report.pdf"), "report.pdf");
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\Users\\x\\scan.png"), "scan.png");
        assert_eq!(sanitize_filename("a\u{0}b\r\nc\u{7}.txt"), "abc.txt");
        assert_eq!(
            sanitize_filename("invoice\u{202E}fdp.exe"),
            "invoicefdp.exe"
        );
        assert_eq!(sanitize_filename("..."), "document");
        assert_eq!(sanitize_filename(""), "document");
        assert_eq!(sanitize_filename("/"), "document");
        assert_eq!(sanitize_filename(".bashrc"), "bashrc");
        assert_eq!(sanitize_filename("CON"), "_CON");
        assert_eq!(sanitize_filename("lpt1.txt"), "_lpt1.txt");
        assert_eq!(sanitize_filename("a:b?.pdf"), "a_b_.pdf");
        assert_eq!(
            sanitize_filename("Résultats sanguins.pdf"),
            "Résultats sanguins.pdf"
        );
        let long = format!("{}.pdf", "é".repeat(200));
        let s = sanitize_filename(&long);
        assert!(s.len() <= MAX_FILENAME_BYTES, "{}", s.len());
        assert!(s.ends_with("é.pdf"), "{s}");
        let long = "x".repeat(1000);
        assert_eq!(sanitize_filename(&long).len(), MAX_FILENAME_BYTES);
    }
}
