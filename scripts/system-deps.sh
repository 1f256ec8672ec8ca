#!/usr/bin/env bash
# Installs the Debian packages edgeqd's demo and tests use, when they are missing.
# As root it uses apt-get; otherwise it says what is missing and goes on: the
# dataset then comes from `apt-get download` into ~/.cache/edgeqd, and the tests
# that need qemu, sshd, adb or chromium are skipped with that reason.
set -u
packages=(
  dataset-fashion-mnist   # the built-in default dataset (MIT)
  qemu-user-static        # emulated Raspberry Pi (aarch64) and armv7 boards
  openssh-server          # the local sshd test fixture
  openssh-client          # ssh transport
  adb                     # Android transport (client/server)
  gcc                     # compiles the TFLite Micro C array in tests
  chromium                # renders the HTML report in a test
  postgresql              # the optimize test where several workers share one PostgreSQL study
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    # One by one, so that a package that will not install costs only its own tests.
    for p in "${missing[@]}"; do
      apt-get install -y -q --no-install-recommends "$p" >/dev/null 2>&1 \
        || echo "warning: could not install $p; the tests that need it will be skipped"
    done
  fi
else
  echo "note: not root; missing Debian packages: ${missing[*]} (dependent tests will be skipped)"
fi
exit 0
