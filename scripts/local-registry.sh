#!/usr/bin/env bash
# A real OCI registry on loopback for the image tests, the demo and the pull benchmark:
# Debian's docker-registry on a free port, its config and storage in FOLDER, seeded with a
# busybox image built here from Debian's busybox-static with umoci and pushed with skopeo.
# Usage: scripts/local-registry.sh FOLDER [--htpasswd USER:PASSWORD | --token USER:PASSWORD] [--python]
# Prints "PORT PID" once the registry answers and holds 127.0.0.1:PORT/busybox:latest.
# With --python (or VMFORK_REGISTRY_PYTHON=1) it also holds 127.0.0.1:PORT/python3:latest:
# this host's python3 (two layers: busybox, ld.so and the libraries ldd names; then the
# interpreter and its standard library /usr/lib/python3.X), cmd the interpreter's real path.
# Stop it with: kill PID (the folder is yours to remove). With --token, the registry wants
# bearer tokens from scripts/token-server.py (basic auth USER:PASSWORD there), and the line
# is "PORT PID TOKENPID".
set -euo pipefail
folder=$(realpath -m "$1"); shift
auth_user=""
token_user=""
python_image=${VMFORK_REGISTRY_PYTHON:-0}
while [ $# -gt 0 ]; do
    case "$1" in
        --htpasswd) auth_user=$2; shift 2 ;;
        --token) token_user=$2; shift 2 ;;
        --python) python_image=1; shift ;;
        *) echo "local-registry.sh: unknown option $1 (want --htpasswd USER:PASSWORD, --token USER:PASSWORD or --python)" >&2; exit 2 ;;
    esac
done
mkdir -p "$folder/storage"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
auth=""
if [ -n "$auth_user" ]; then
    htpasswd -Bbn "${auth_user%%:*}" "${auth_user#*:}" > "$folder/htpasswd"
    auth="auth:
  htpasswd:
    realm: vmfork-test
    path: $folder/htpasswd"
fi
cat > "$folder/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $folder/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$auth
YAML
# Runs a program in the background without the caller's other descriptors: a caller reading
# our output to its end must not wait on a server holding a copy of its pipe.
detached() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec "$@" < /dev/null
    ) &
}
start_registry() {
    detached docker-registry serve "$folder/config.yml" > "$folder/registry.log" 2>&1
    pid=$!
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
        [ "$code" = 200 ] || [ "$code" = 401 ] && break
        sleep 0.1
    done
}
start_registry

# The image: /bin/busybox with sh/echo/cat/ls links, entrypoint busybox, cmd sh.
if [ ! -d "$folder/oci" ]; then
    stage="$folder/stage"
    mkdir -p "$stage/bin" "$stage/etc" "$stage/tmp"
    cp /bin/busybox "$stage/bin/busybox"
    for applet in sh echo cat ls; do ln -sf busybox "$stage/bin/$applet"; done
    echo "vmfork-registry-image" > "$stage/etc/hostname"
    umoci init --layout "$folder/oci" >/dev/null
    umoci new --image "$folder/oci:busybox" >/dev/null
    umoci insert --image "$folder/oci:busybox" "$stage" / >/dev/null
    umoci config --image "$folder/oci:busybox" --config.entrypoint /bin/busybox --config.cmd sh \
        --config.env PATH=/bin --config.env GREETING=hello --config.workingdir / --config.user 0:0 \
        --architecture amd64 --os linux >/dev/null
fi
creds=()
[ -n "$auth_user" ] && creds=(--dest-creds "$auth_user")
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "${creds[@]}" "oci:$folder/oci:busybox" "docker://127.0.0.1:$port/busybox:latest" >/dev/null

# The python3 image, two layers: (1) busybox as /bin/sh etc., the dynamic linker and the
# libraries ldd names for the interpreter; (2) the interpreter (and a python3 link to it)
# with its standard library, as scripts/run.sh lays out its python rootfs.
if [ "$python_image" = 1 ]; then
    python=$(readlink -f /usr/bin/python3)
    if ! umoci ls --layout "$folder/oci" | grep -qx python3; then
        libs="$folder/stage-python-libs"
        mkdir -p "$libs/bin" "$libs/etc" "$libs/tmp"
        cp /bin/busybox "$libs/bin/busybox"
        for applet in sh echo cat ls; do ln -sf busybox "$libs/bin/$applet"; done
        echo "vmfork-python-image" > "$libs/etc/hostname"
        for file in $(ldd "$python" | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\// {print $1}'); do
            mkdir -p "$libs$(dirname "$file")"; cp -L "$file" "$libs$file"
        done
        interpreter="$folder/stage-python"
        mkdir -p "$interpreter$(dirname "$python")" "$interpreter/usr/lib"
        cp -L "$python" "$interpreter$python"
        [ "$python" = /usr/bin/python3 ] || ln -sf "$(basename "$python")" "$interpreter/usr/bin/python3"
        cp -RL "/usr/lib/$(basename "$python")" "$interpreter/usr/lib/"
        umoci new --image "$folder/oci:python3" >/dev/null
        umoci insert --image "$folder/oci:python3" "$libs" / >/dev/null
        umoci insert --image "$folder/oci:python3" "$interpreter" / >/dev/null
        umoci config --image "$folder/oci:python3" --config.cmd "$python" \
            --config.env PATH=/usr/bin:/bin --config.env LANG=C.UTF-8 --config.workingdir / --config.user 0:0 \
            --architecture amd64 --os linux >/dev/null
        rm -rf "$libs" "$interpreter"
    fi
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false "${creds[@]}" "oci:$folder/oci:python3" "docker://127.0.0.1:$port/python3:latest" >/dev/null
fi
if [ -z "$token_user" ]; then echo "$port $pid"; exit 0; fi

# Bearer tokens: seeded without auth above, the registry restarts on the same storage wanting
# tokens signed by a key of our own, from the token server.
kill "$pid"; wait "$pid" 2>/dev/null || true
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$folder/token.key" -out "$folder/token.crt" -days 2 \
    -subj /CN=vmfork-token 2>/dev/null
detached python3 "$(dirname "$0")/token-server.py" "$folder/token.key" "$folder/token.crt" "${token_user%%:*}" "${token_user#*:}" \
    > "$folder/token.port" 2> "$folder/token.log"
for _ in $(seq 100); do [ -s "$folder/token.port" ] && break; sleep 0.1; done
read -r token_port token_pid < "$folder/token.port"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/addr: 127.0.0.1:.*/addr: 127.0.0.1:$port/" "$folder/config.yml"
cat >> "$folder/config.yml" <<YAML
auth:
  token:
    realm: http://127.0.0.1:$token_port/token
    service: vmfork-registry
    issuer: vmfork-token
    rootcertbundle: $folder/token.crt
YAML
start_registry
echo "$port $pid $token_pid"
