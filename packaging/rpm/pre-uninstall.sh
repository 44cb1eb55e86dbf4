# %preun ($1 = 0 on erase, 1 on upgrade): stop and disable the service on erase only.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now flowguard.service >/dev/null 2>&1 || :
fi
exit 0
