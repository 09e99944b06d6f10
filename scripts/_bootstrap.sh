# shellcheck shell=bash
# Sourced by scripts/run and scripts/test: install what a fresh Debian 12 machine with only
# Python 3.11 lacks (Debian packages when root, uv through pip), then the workspace itself.
# Every function is safe to call again: it does nothing when the thing is already there.

export UV_PYTHON_DOWNLOADS=never      # the project runs on the machine's Python 3.11, never a download
export DEBIAN_FRONTEND=noninteractive # CI has no stdin
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# Commands the EXIT trap runs, last registered first (a stopped PostgreSQL, a removed file).
CLEANUPS=()
on_exit() { CLEANUPS=("$*" "${CLEANUPS[@]}"); }
run_cleanups() {
    local cleanup
    for cleanup in "${CLEANUPS[@]}"; do eval "$cleanup" || true; done
}
trap run_cleanups EXIT
trap 'exit 130' INT # bash runs the EXIT trap on exit, not when a signal ends it
trap 'exit 143' TERM

debian_package_missing() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) != "install ok installed" ]]
}

APT_UPDATED=0
# Install the Debian packages among "$@" that are missing; as root only, and without starting
# their daemons (a PostgreSQL that starts itself with password auth would stand in the way).
install_debian_packages() {
    local missing=() package
    command -v dpkg-query >/dev/null || return 0
    for package in "$@"; do
        if debian_package_missing "$package"; then missing+=("$package"); fi
    done
    ((${#missing[@]})) || return 0
    if ! is_root; then
        say "not root: not installing Debian packages ${missing[*]}"
        return 0
    fi
    if ((!APT_UPDATED)); then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d held=0
    if [[ ! -e $policy ]]; then
        # invoke-rc.d asks policy-rc.d before starting a service; 101 means "not now"
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        on_exit rm -f "$policy" # should the install be interrupted
        held=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((held)); then rm -f "$policy"; fi
}

# uv on PATH: already there, in ~/.local/bin, or installed with pip.
ensure_uv() {
    export PATH="$HOME/.local/bin:$PATH"
    command -v uv >/dev/null && return 0
    if ! python3 -m pip --version >/dev/null 2>&1; then
        install_debian_packages python3-pip
        python3 -m pip --version >/dev/null 2>&1 ||
            die "uv is not installed and python3 has no pip: install uv, or python3-pip as root"
    fi
    say "installing uv with pip"
    # Debian marks its Python as externally managed (PEP 668); uv is one self-contained binary
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet "uv>=0.9"
    if ! command -v uv >/dev/null; then
        # pip put it somewhere not on PATH (a user install elsewhere, a pyenv): ask the package
        PATH="$(dirname "$(python3 -c 'import uv; print(uv.find_uv_bin())')"):$PATH"
        export PATH
    fi
    command -v uv >/dev/null || die "pip installed uv but it is not on PATH"
}

# The workspace's Python packages exactly as uv.lock pins them; "$@" adds uv sync options.
# Bytecode compiled at install: every Heron service is a Python process, and where
# PYTHONDONTWRITEBYTECODE is set (as on many CI images) each start would otherwise compile its
# imports from source again: seconds of CPU per process (management: 4.2 s instead of 1.3 s).
sync_workspace() {
    say "uv sync $*"
    uv sync --frozen --all-packages --compile-bytecode "$@"
}
