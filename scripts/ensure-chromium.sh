#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (the headless browser the `hilovit app` page is tested in)
# when they are missing. Without root or apt-get it only says what to do; the browser test then skips.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing a headless browser for the app test (apt-get install chromium chromium-driver) ..."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver; } >/dev/null || echo "warning: could not install chromium and chromium-driver" >&2
else
  echo "note: chromium/chromedriver are not installed; run 'sudo apt-get install chromium chromium-driver'" >&2
  echo "      for the browser test of hilovit app (it skips without them)" >&2
fi
exit 0
