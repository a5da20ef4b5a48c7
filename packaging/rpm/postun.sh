# accessd %postun — the RPM counterpart of packaging/debian/postrm and of the
# restart in postinst. $1 = 0 after erase, >= 1 after an upgrade (this runs
# from the old package, after the new one is in place).
#
# RPM has no purge: /var/lib/accessd (the identity key, replay set and outbox)
# is left when it is not empty, and so is a changed /etc/accessd/accessd.toml
# (as .rpmsave). docs/install.md says how to delete them.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        # try-restart: a daemon the administrator stopped stays stopped.
        systemctl try-restart accessd.service >/dev/null 2>&1 \
            || echo "accessd: restart after upgrade failed; see 'journalctl -u accessd'" >&2
    fi
fi
exit 0
