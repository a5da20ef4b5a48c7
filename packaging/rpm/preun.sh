# accessd %preun — the RPM counterpart of packaging/debian/prerm.
# $1 = 0 when the package is erased, >= 1 when this is the old half of an
# upgrade (then nothing happens: %postun restarts the daemon).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop accessd.service accessd-boot.service >/dev/null 2>&1 || :
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload disable accessd.service accessd-boot.service >/dev/null 2>&1 \
            || echo "accessd: could not disable accessd.service accessd-boot.service" >&2
    fi
fi
exit 0
