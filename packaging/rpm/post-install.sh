# %post ($1 = 1 on install, 2 on upgrade). Creates /var/lib/flowguard (0700) when missing; an
# existing one keeps its contents (keys/, stores). The master key is never created or replaced
# here: the appliance creates it on first start.
if [ ! -d /var/lib/flowguard ]; then
    install -d -m 0700 -o flowguard -g flowguard /var/lib/flowguard
else
    chown flowguard:flowguard /var/lib/flowguard
    chmod 0700 /var/lib/flowguard
fi
# Configuration directory: readable by the service's group only.
if [ -d /etc/flowguard ]; then
    chgrp flowguard /etc/flowguard
    chmod 0750 /etc/flowguard
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    echo "flowguard: installed. Review /etc/flowguard/flowguard.toml, then: systemctl enable --now flowguard"
    echo "flowguard: the master key is created on first start in /var/lib/flowguard/keys/master.key -- back it up."
fi
exit 0
