#!/usr/bin/env bash
# Make sure the system packages the test suite needs are installed (Debian/Ubuntu).
#
#   scripts/ensure-system-deps.sh                    # mariadbd (+ mariadb client)
#   scripts/ensure-system-deps.sh --with-prometheus  # ... and prometheus, promtool and
#                                                    # prometheus-pushgateway
#
# Idempotent and fast when everything is present: no apt-get call at all then.
# The tests start their own throwaway mariadbd, so the system service is never started
# (policy-rc.d blocks it during the install, and nothing here enables it).
set -euo pipefail

with_prometheus=0
for arg in "$@"; do
    case "$arg" in
        --with-prometheus) with_prometheus=1 ;;
        -h | --help)
            sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "ensure-system-deps: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

# Look in PATH and in the sbin/libexec dirs a non-root PATH often lacks.
find_cmd() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in /usr/sbin /usr/libexec /sbin /usr/local/sbin; do
        if [[ -x "$dir/$name" ]]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

packages=()
if ! find_cmd mariadbd >/dev/null; then
    packages+=(mariadb-server mariadb-client)
elif ! find_cmd mariadb >/dev/null && ! find_cmd mysql >/dev/null; then
    packages+=(mariadb-client)
fi
if ((with_prometheus)); then
    # Debian's prometheus ships both prometheus and promtool.
    if ! find_cmd promtool >/dev/null || ! find_cmd prometheus >/dev/null; then
        packages+=(prometheus)
    fi
    if ! find_cmd prometheus-pushgateway >/dev/null; then
        packages+=(prometheus-pushgateway)
    fi
fi

if ((${#packages[@]} == 0)); then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    cat >&2 <<EOF
ensure-system-deps: missing system packages: ${packages[*]}
Not running as root and sudo is not available. Install them as root:
    apt-get update && apt-get install --no-install-recommends ${packages[*]}
EOF
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-deps: apt-get not found; install ${packages[*]} by hand" >&2
    exit 1
fi

echo "ensure-system-deps: installing ${packages[*]}" >&2

# Keep the package's maintainer scripts from starting the system mariadb/prometheus/
# pushgateway service: invoke-rc.d consults policy-rc.d, and exit code 101 means "action forbidden".
# Only installed if there is none yet, and removed again afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=0
cleanup() {
    if ((added_policy)); then
        "${as_root[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 0755 "$policy"
    added_policy=1
fi

# sudo resets the environment, so pass DEBIAN_FRONTEND through env.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${packages[@]}"

find_cmd mariadbd >/dev/null || {
    echo "ensure-system-deps: mariadbd still not found after installing" >&2
    exit 1
}
if ((with_prometheus)); then
    for cmd in promtool prometheus prometheus-pushgateway; do
        find_cmd "$cmd" >/dev/null || {
            echo "ensure-system-deps: $cmd still not found after installing" >&2
            exit 1
        }
    done
fi
