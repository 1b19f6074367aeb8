#!/usr/bin/env bash
# Install the real human recordings the STT accuracy tests and perf/stt_wer.py use
# (tests/data/recordings.py): Debian packages, about 30 MB, nothing else is downloaded.
#   asterisk-core-sounds-en{,-wav,-g722}: IVR prompts read by Allison Smith, CC-BY-SA-3.0
#   pocketsphinx-testdata: CMU Sphinx's test recordings, BSD-2
# Does nothing when they are installed; needs root (or sudo) and apt-get otherwise.
set -euo pipefail
packages=(asterisk-core-sounds-en asterisk-core-sounds-en-wav asterisk-core-sounds-en-g722 pocketsphinx-testdata)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "speech-data: no apt-get here; install the Debian packages ${missing[*]} by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "speech-data: run as root to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo -n"
fi
echo "speech-data: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
