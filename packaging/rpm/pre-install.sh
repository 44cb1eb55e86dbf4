# %pre: create the flowguard system group and user before the files land, so that the
# config file gets its group. Never touches existing data.
getent group flowguard >/dev/null 2>&1 || groupadd --system flowguard
getent passwd flowguard >/dev/null 2>&1 || \
    useradd --system --gid flowguard --home-dir /var/lib/flowguard --no-create-home \
        --shell /sbin/nologin --comment "FlowGuard Appliance" flowguard
exit 0
