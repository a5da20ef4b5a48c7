# accessd %post — the RPM counterpart of packaging/debian/postinst.
# $1 = 1 on first install, >= 2 on upgrade. Written out instead of the
# %systemd_post macro because cargo-generate-rpm does not expand macros.

# The agent's private state (identity key, replay set, outbox) is root's
# alone; install -d also tightens a directory that already exists. The
# identity key itself is made by the agent on its first start on the
# instance, never here: an image cloned a thousand times must not carry one
# shared key.
install -d -m 0700 -o root -g root /var/lib/accessd

# First install: enable both units, start nothing (the shipped config trusts
# no control-plane key yet). `systemctl --no-reload enable` only writes
# symlinks, so it works in image builds and chroots where systemd is not
# running; without systemctl there is no systemd to enable anything for.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload enable accessd.service accessd-boot.service >/dev/null 2>&1 \
        || echo "accessd: could not enable accessd.service accessd-boot.service" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
