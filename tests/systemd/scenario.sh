#!/bin/sh
# Runs in the booted guest (systemd is PID 1) as root, from pymon-scenario.service.
# It only acts and records: every check is made by tests/test_systemd_boot.py on the
# files this writes to /share/results. A step that cannot go on stops the script.
set -u
R=/share/results
mkdir -p $R
t() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "$1 $(t)" >> $R/times; }
show() { systemctl show pymon -p MainPID -p ActiveState -p SubState -p NRestarts \
    -p ExecMainStartTimestampMonotonic -p ActiveEnterTimestampMonotonic -p User -p Result; }
pid() { systemctl show -p MainPID --value pymon; }
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds; status 1 on timeout
    end=$(awk -v n="$1" '{ print $1 + n }' /proc/uptime); shift
    until "$@" >/dev/null 2>&1; do
        awk -v e="$end" '{ exit !($1 > e) }' /proc/uptime && return 1
        sleep 0.2
    done
}
C=/etc/pymon/pymon.yaml

echo "scenario started at uptime $(t)" > $R/info
uname -r >> $R/info

# The real servers, on a dummy interface.
ip link add dummy0 type dummy && ip link set dummy0 up &&
    ip addr add 10.0.0.11/32 dev dummy0 && ip addr add 10.0.0.12/32 dev dummy0 || exit 10
cp /share/backend.py /root/backend.py
systemd-run --unit=test-backend /usr/bin/python3 /root/backend.py || exit 11
wait_for 30 python3 -c 'import urllib.request as u; u.urlopen("http://10.0.0.12/health", timeout=2)' || exit 12

mark install
# The README's install block, as it is written there, in a copy of the source tree.
# pip has no network here: PIP_NO_INDEX and PIP_FIND_LINKS point it at the wheels of
# pymon's dependencies, prepared on the host.
cp -a /share/src /root/pymon-src
cd /root/pymon-src
s=$(t)
PIP_NO_INDEX=1 PIP_FIND_LINKS=/share/wheels PIP_DISABLE_PIP_VERSION_CHECK=1 \
    sh -ex /share/install.sh > $R/install.log 2>&1
echo $? > $R/install.rc
echo "install_s $(awk -v a="$s" -v b="$(t)" 'BEGIN { print b - a }')" >> $R/info
systemctl is-active pymon > $R/install-active.txt
[ "$(cat $R/install.rc)" = 0 ] || exit 13
cd /

mark a1
# 1. start -> active only after READY=1: the first round of checks (slowed to 3 s by the
# backend) and the IPVS reconcile. The table is cleared first, so what is there after
# `systemctl start` returns is pymon's doing.
systemctl stop pymon
ipvsadm -C
touch /run/backend/slow
( while :; do systemctl is-active pymon; sleep 0.2; done ) > $R/a1-poll.txt 2>&1 &
poller=$!
systemctl start pymon
echo $? > $R/a1-start.rc
ipvsadm -Ln > $R/a1-ipvs.txt 2>&1
kill $poller
show > $R/a1-show.txt
rm /run/backend/slow
cp /run/backend/slow.log $R/a1-slow.log

mark a2
# 2. the user and capabilities of the process that did it
p=$(pid)
grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/$p/status > $R/a2-proc.txt
ps -o user= -p $p >> $R/a2-proc.txt

mark a3
# 3. reload: 10.0.0.12's weight 1 -> 5 in the config, `systemctl reload`
sed -i 's/\("10.0.0.12:80".*weight: \)1}/\15}/' $C
grep -n '10.0.0.12:80' $C > $R/a3-config.txt
systemctl reload pymon
echo $? > $R/a3-reload.rc
wait_for 30 sh -c 'ipvsadm -Ln | grep -q "10.0.0.12:80 .* 5 "'
ipvsadm -Ln > $R/a3-ipvs.txt 2>&1
echo "pid_before $p pid_after $(pid)" > $R/a3-pid.txt

mark a5
# 5. a real server fails: its warnings in the journal at priority warning
touch /run/backend/down-10.0.0.12
wait_for 60 sh -c 'w=$(journalctl -u pymon -p warning -o cat)
    echo "$w" | grep 10.0.0.12 | grep -q "\"host.state\"" && echo "$w" | grep -q "\"alert.log\""'
mark a5-seen
wait_for 30 sh -c '! ipvsadm -Ln | grep -q "10.0.0.12:80"'
journalctl -u pymon -p warning -o cat --no-pager > $R/a5-warning.txt
journalctl -u pymon -o json --no-pager > $R/a5-journal.json
ipvsadm -Ln > $R/a5-ipvs.txt 2>&1
rm /run/backend/down-10.0.0.12

mark a6
# 6. state across a restart: 10.0.0.11 disabled, then `systemctl restart`
pymon disable host 10.0.0.11 -c $C --reason "test maintenance" > $R/a6-disable.txt 2>&1
echo $? >> $R/a6-disable.txt
p=$(pid)
systemctl restart pymon
echo $? > $R/a6-restart.rc
echo "pid_before $p pid_after $(pid)" > $R/a6-pid.txt
pymon status -c $C > $R/a6-status.txt 2>&1
echo $? >> $R/a6-status.txt
pymon status -c $C --json > $R/a6-status.json 2>/dev/null
ipvsadm -Ln > $R/a6-ipvs.txt 2>&1
ls -l /var/lib/pymon >> $R/a6-status.txt 2>&1

mark a4
# 4. watchdog: the main process stopped with SIGSTOP stops sending WATCHDOG=1
p=$(pid)
echo "stopped $p at $(t)" > $R/a4-watchdog.txt
kill -STOP $p
wait_for 150 sh -c "[ \"\$(systemctl show -p MainPID --value pymon)\" != $p ] && systemctl is-active -q pymon"
echo "done at $(t)" >> $R/a4-watchdog.txt
show > $R/a4-show.txt
journalctl -u pymon -o cat --no-pager | grep -iE 'watchdog|SIGABRT|Main process exited|Scheduled restart' >> $R/a4-watchdog.txt
ipvsadm -Ln > $R/a4-ipvs.txt 2>&1

mark end
journalctl -u pymon --no-pager > $R/journal.txt
systemctl status pymon --no-pager > $R/status.txt 2>&1
echo done > $R/done
