# %postun ($1 = 0 on erase, 1 on upgrade): restart a running service after an upgrade; on
# erase, say where the data stayed (it is never deleted by the package).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart flowguard.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ] && [ -d /var/lib/flowguard ]; then
    echo "flowguard: removed. The data directory /var/lib/flowguard was KEPT: it holds the encrypted"
    echo "flowguard: stores and the master key (/var/lib/flowguard/keys/master.key). Remove it yourself"
    echo "flowguard: once you no longer need the data. The flowguard user and group were kept too."
fi
exit 0
