#!/usr/bin/env bash
# Re-resolves the two hash-pinned locks from pyproject.toml (docs/dependencies.md):
#   requirements/ci.txt         what .ci/run installs: extras models, ffmpeg, plot, test, ray
#   requirements/container.txt  what the Containerfile installs: extras models, plot
# for CPython 3.11 on x86_64 Linux with glibc 2.36 or newer (CI's machine; the image's stand-in base
# is Debian 12; the real CUDA base is Ubuntu 24.04 with Python 3.12, checked below).
#
#   requirements/refresh.sh                          # follow pyproject.toml, keep every pin it still allows
#   requirements/refresh.sh --upgrade                # move every pin to the newest allowed release
#   requirements/refresh.sh --upgrade-package numpy  # move one
#
# Extra arguments go to both `uv pip compile` calls. uv comes from PyPI at the version pinned here,
# in a throwaway venv. Needs python3 (3.11) and PyPI; changes nothing but the two lock files.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
PYTHON_VERSION=3.11
# The lowest glibc among the machines that install a lock: Debian 12 has 2.36, Ubuntu 24.04 2.39.
PLATFORM=x86_64-manylinux_2_36
# The real image's Python (Ubuntu 24.04's python3): the container lock must install there too.
IMAGE_PYTHON_VERSION=3.12

TOOLS=$(mktemp -d "${TMPDIR:-/tmp}/carevoice-refresh.XXXXXX")
trap 'rm -rf "$TOOLS"' EXIT
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install -q "uv==$UV_VERSION"
UV="$TOOLS/venv/bin/uv"

# uv writes the file; the lines above its own header say what the file is for.
header() {  # header FILE PURPOSE
  local body
  body=$(cat "$1")
  {
    echo "# $2"
    echo "# Hash-pinned lock (CPython $PYTHON_VERSION, $PLATFORM); install with pip install --require-hashes -r $1."
    echo "# Do not edit by hand: change pyproject.toml, then refresh both locks with the one command"
    echo "#    requirements/refresh.sh             (add --upgrade to move every pin to its newest allowed release)"
    echo "# See docs/dependencies.md."
    echo "$body"
  } >"$1"
}

compile() {  # compile OUTPUT EXTRAS... [-- UV-ARGS...]
  local output=$1
  shift
  local args=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    args+=(--extra "$1")
    shift
  done
  if [ "$#" -gt 0 ]; then shift; fi
  "$UV" pip compile pyproject.toml "${args[@]}" "$@" \
    --python-version "$PYTHON_VERSION" --python-platform "$PLATFORM" \
    --generate-hashes --custom-compile-command "requirements/refresh.sh" \
    --quiet --output-file "$output"
}

# CI's lock first; the container's is resolved within it, so every package the image ships has the
# version the test suite ran against.
compile requirements/ci.txt models ffmpeg plot test ray -- "$@"
compile requirements/container.txt models plot -- --constraint requirements/ci.txt "$@"

# The same pins must resolve for the real image's Python: a release that drops 3.12, or a
# dependency with a python_version marker, would make the lock incomplete there.
"$UV" pip compile pyproject.toml --extra models --extra plot --constraint requirements/container.txt \
  --python-version "$IMAGE_PYTHON_VERSION" --python-platform "$PLATFORM" \
  --no-header --no-annotate --quiet --output-file "$TOOLS/image-python.txt"
pins() { grep -E '^[A-Za-z0-9]' "$1" | sed 's/ .*//' | sort; }
if ! diff <(pins requirements/container.txt) <(pins "$TOOLS/image-python.txt") >"$TOOLS/pins.diff"; then
  cat "$TOOLS/pins.diff" >&2
  echo "refresh: the container lock resolves differently for Python $IMAGE_PYTHON_VERSION (above)" >&2
  exit 1
fi

header requirements/ci.txt "What .ci/run installs before the README's test command: carevoice[models,ffmpeg,plot,test,ray]."
header requirements/container.txt "What the Containerfile installs before carevoice itself (--no-deps): carevoice[models,plot]."
echo "refresh: requirements/ci.txt $(pins requirements/ci.txt | wc -l) pins, requirements/container.txt" \
  "$(pins requirements/container.txt | wc -l) pins (same pins for Python $IMAGE_PYTHON_VERSION)" >&2
