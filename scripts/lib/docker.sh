# Docker for the tests and the demo: a running dockerd and the busybox test image.
# shellcheck shell=bash
#
#   source scripts/lib/docker.sh
#   ensure_dockerd        # start dockerd in the background unless it answers already
#   ensure_test_image     # import bulkhead/busybox:test from Debian's busybox-static unless present
#
# Both are idempotent and print one line when they change something. There is no registry here,
# so the image is built with `docker import` from /bin/busybox (package busybox-static).

BULKHEAD_TEST_IMAGE="${BULKHEAD_TEST_IMAGE:-bulkhead/busybox:test}"
BULKHEAD_DOCKERD_LOG="${BULKHEAD_DOCKERD_LOG:-/var/log/bulkhead-dockerd.log}"
BULKHEAD_DOCKERD_TIMEOUT="${BULKHEAD_DOCKERD_TIMEOUT:-30}"

# Applets the tests use inside containers; the image links every applet busybox has, and this list
# is what ensure_test_image insists on.
BULKHEAD_TEST_APPLETS=(sh nc ping ping6 sleep ip wget httpd timeout cat echo hostname)
# Bumped whenever the image's content changes, so an older image under the same tag is rebuilt.
BULKHEAD_TEST_IMAGE_REVISION=1

# Waits up to BULKHEAD_DOCKERD_TIMEOUT seconds for `docker version` to reach the daemon.
# With a pid, gives up as soon as that process exits (a dockerd that failed to start).
_bulkhead_wait_for_dockerd() {
    local pid="${1:-}"
    local deadline=$((SECONDS + BULKHEAD_DOCKERD_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker version >/dev/null 2>&1 && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "error: dockerd exited while starting" >&2
            return 1
        fi
        sleep 0.5
    done
    return 1
}

# Starts dockerd when `docker version` cannot reach it, and waits until it answers.
ensure_dockerd() {
    if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
        echo "error: docker is not installed (apt-get install docker.io)" >&2
        return 1
    fi
    docker version >/dev/null 2>&1 && return 0
    local pid=""
    if pgrep -x dockerd >/dev/null 2>&1; then
        # Someone started it already (another script, systemd); a second one would fight over
        # the pid file and the socket, so wait for that one instead.
        echo "==> dockerd is starting; waiting up to ${BULKHEAD_DOCKERD_TIMEOUT}s"
    else
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: dockerd is not running and starting it needs root" >&2
            return 1
        fi
        if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
            echo "==> started dockerd with systemctl"
        else
            # No systemd (containers, CI): run it detached in its own session so it outlives this
            # script; it starts and supervises its own containerd when none is running.
            mkdir -p "$(dirname "$BULKHEAD_DOCKERD_LOG")"
            echo "==> starting dockerd (log: $BULKHEAD_DOCKERD_LOG)"
            setsid dockerd >>"$BULKHEAD_DOCKERD_LOG" 2>&1 </dev/null &
            pid=$!
        fi
    fi
    if ! _bulkhead_wait_for_dockerd "$pid"; then
        echo "error: dockerd is not answering (waited up to ${BULKHEAD_DOCKERD_TIMEOUT}s); last lines of $BULKHEAD_DOCKERD_LOG:" >&2
        tail -n 20 "$BULKHEAD_DOCKERD_LOG" >&2 2>/dev/null || true
        return 1
    fi
    echo "==> dockerd $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null) is up"
}

# True when the tagged image exists and was built by this revision of ensure_test_image.
_bulkhead_test_image_current() {
    local revision
    revision="$(docker image inspect --format '{{ index .Config.Labels "io.bulkhead.test-image.revision" }}' "$BULKHEAD_TEST_IMAGE" 2>/dev/null)" || return 1
    [ "$revision" = "$BULKHEAD_TEST_IMAGE_REVISION" ]
}

# Imports BULKHEAD_TEST_IMAGE from /bin/busybox unless this revision of it exists. An image of the
# same tag built otherwise (fewer applets) is replaced; containers still using it keep running.
ensure_test_image() {
    _bulkhead_test_image_current && return 0
    local busybox=/bin/busybox
    if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
        echo "error: $busybox is missing (apt-get install busybox-static)" >&2
        return 1
    fi
    local applet applets
    applets="$("$busybox" --list)"
    for applet in "${BULKHEAD_TEST_APPLETS[@]}"; do
        if ! grep -qx "$applet" <<<"$applets"; then
            echo "error: $busybox has no '$applet' applet; the Docker tests need: ${BULKHEAD_TEST_APPLETS[*]}" >&2
            return 1
        fi
    done
    local root
    root="$(mktemp -d /tmp/bulkhead-image.XXXXXX)"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/www"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    while read -r applet; do
        [ -n "$applet" ] && [ "$applet" != busybox ] && ln -sf busybox "$root/bin/$applet"
    done <<<"$applets"
    echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
    echo "==> importing $BULKHEAD_TEST_IMAGE from $busybox"
    local status=0
    tar -C "$root" -c . | docker import \
        --change "LABEL io.bulkhead.test-image.revision=$BULKHEAD_TEST_IMAGE_REVISION" \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["sh"]' \
        - "$BULKHEAD_TEST_IMAGE" >/dev/null || status=$?
    rm -rf "$root"
    if [ "$status" -ne 0 ] || ! _bulkhead_test_image_current; then
        echo "error: docker import of $BULKHEAD_TEST_IMAGE failed" >&2
        return 1
    fi
}
