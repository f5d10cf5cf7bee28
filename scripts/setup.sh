#!/usr/bin/env bash
# Creates .venv/ at the repo root and installs what Koe Studio needs. Safe to re-run (skips what is done).
#   bash scripts/setup.sh          # the studio
#   bash scripts/setup.sh --dev    # the studio + test tools (pytest, playwright, chromium, espeak-ng, sox)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages (ffmpeg for audio decoding; the test tools when --dev) -------------------------
missing_system() {
  need=()
  command -v ffmpeg >/dev/null || need+=(ffmpeg)
  if [[ $DEV == 1 ]]; then
    command -v espeak-ng >/dev/null || need+=(espeak-ng)
    command -v sox >/dev/null || need+=(sox)
    [[ -x /usr/bin/chromium ]] || need+=(chromium)
  fi
}
missing_system
if (( ${#need[@]} )); then
  SUDO=""
  [[ $(id -u) != 0 ]] && command -v sudo >/dev/null && SUDO="sudo -n"
  if command -v apt-get >/dev/null && { [[ $(id -u) == 0 ]] || [[ -n $SUDO ]]; }; then
    say "installing system packages: ${need[*]}"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
      || say "apt-get could not install: ${need[*]}"
    missing_system
  fi
  if (( ${#need[@]} )); then
    if [[ $DEV == 1 ]]; then
      # The test tools are not optional: without them tests would skip and a green run would mean little.
      say "ERROR: the tests need these system packages: ${need[*]} (Debian/Ubuntu: apt-get install ${need[*]})"
      exit 1
    fi
    say "WARNING: please install these system packages yourself: ${need[*]}"
  fi
fi

# --- the virtual environment ---------------------------------------------------------------------------
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  # On Colab/AutoDL the system Python already has a CUDA torch: let the venv see it instead of
  # downloading another one.
  if "$PY" -c "import torch" 2>/dev/null; then
    say "creating .venv (sharing the system's torch $("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages .venv
  else
    say "creating .venv"
    "$PY" -m venv .venv
  fi
fi
VPY=.venv/bin/python

if ! $VPY -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    say "installing torch (CUDA build, a GPU was found)"
    $VPY -m pip install -q "torch>=2.1"
  else
    # No GPU: the CPU build. KOE_TORCH_INDEX may name a CPU-only index for a smaller download.
    say "installing torch 2.13.0 (CPU)"
    $VPY -m pip install -q torch==2.13.0 ${KOE_TORCH_INDEX:+--index-url "$KOE_TORCH_INDEX"}
  fi
fi

REQ=requirements.txt
[[ $DEV == 1 ]] && REQ=requirements-dev.txt
stamp=".venv/.koe-$(basename "$REQ" .txt)"
hash=$(cat requirements*.txt | sha256sum | cut -c1-16)
if [[ ! -f $stamp || $(cat "$stamp") != "$hash" ]]; then
  say "installing Python packages from $REQ"
  $VPY -m pip install -q -r "$REQ"
  # openai-whisper without triton (~1 GB, GPU-only) and g2p-en without nltk (we run its bundled
  # model ourselves), Resemblyzer without webrtcvad (a source build; webrtcvad-wheels provides it):
  # their other needs are in requirements.
  $VPY -m pip install -q --no-deps "openai-whisper>=20240930" "g2p-en>=2.1.0" "Resemblyzer==0.1.4"
  echo "$hash" > "$stamp"
fi
say "ready: $($VPY -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
