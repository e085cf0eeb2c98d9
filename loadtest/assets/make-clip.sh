#!/usr/bin/env bash
# Makes the VP8 clips the load generator publishes (run once; the outputs are committed).
# Source: ffmpeg's synthetic `testsrc2` pattern (moving, colourful) with temporal noise so the
# encoder has real work at both bitrates. Encoder: libvpx (VP8), constant bitrate, 30 fps,
# a keyframe every 2.5 s (75 frames, no scene-cut keyframes), 6 s long, IVF container.
#   video-150k.ivf : 160x120, ~150 kbit/s (the lowest simulcast layer)
#   video-500k.ivf : 320x240, ~500 kbit/s
#   video-1200k.ivf: 640x360, ~1.2 Mbit/s
set -euo pipefail
cd "$(dirname "$0")"

make() { # name size kbps
  ffmpeg -v error -y -f lavfi -i "testsrc2=size=$2:rate=30,noise=alls=12:allf=t" -t 6 \
    -c:v libvpx -deadline good -cpu-used 4 -lag-in-frames 0 \
    -b:v "$3k" -minrate "$3k" -maxrate "$3k" -bufsize "$(( $3 / 2 ))k" \
    -g 75 -keyint_min 75 -auto-alt-ref 0 -error-resilient 1 \
    -f ivf "$1"
}

make video-150k.ivf 160x120 150
make video-500k.ivf 320x240 500
make video-1200k.ivf 640x360 1200
ls -l video-*.ivf
