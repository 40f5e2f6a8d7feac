#!/usr/bin/env bash
# Installs Fashion-MNIST's IDX files from Debian (package dataset-fashion-mnist) when they are missing.
# Without root or apt-get it only says what to do; the tests that need the data then skip.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -n "${HILOVIT_DATA_DIR:-}" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Fashion-MNIST (apt-get install dataset-fashion-mnist) ..."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } >/dev/null \
    || echo "warning: could not install dataset-fashion-mnist" >&2
else
  echo "note: Fashion-MNIST is not installed; run 'sudo apt-get install dataset-fashion-mnist'" >&2
  echo "      or point HILOVIT_DATA_DIR / --data-dir at an MNIST-format IDX folder" >&2
fi
exit 0
