#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian/Ubuntu packages: munge, slurmctld, slurmd,
# slurm-client), for testing launch/pretrain_slurm.sh (tests/test_launchers.py) or trying it out.
#
#   bash launch/slurm_local_setup.sh          # install if missing, configure, start; idempotent
#   bash launch/slurm_local_setup.sh stop     # stop the daemons it started
#
# Needs root (apt-get, daemons). Writes /etc/slurm/slurm.conf for this host (its short name,
# CPUs, sockets/cores/threads and memory as `slurmd -C` reports them) unless the file exists
# without our marker line (then an existing, foreign cluster config is left alone and used).
# Daemons: munged, slurmctld, slurmd (no systemd needed); logs under /var/log/slurm/.
# Exit 0 once `sinfo` shows the node idle; non-zero with the reason otherwise.
set -euo pipefail
MARK="# written by smaug launch/slurm_local_setup.sh"
CONF=/etc/slurm/slurm.conf
log() { echo "[slurm-setup] $*"; }
die() { echo "[slurm-setup] ERROR: $*" >&2; exit 1; }

if [ "${1:-}" = stop ]; then
  for p in slurmd slurmctld; do
    f=/run/slurm-smaug/$p.pid
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then kill "$(cat "$f")"; log "stopped $p"; fi
  done
  exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (apt-get install, munge/slurm daemons); running as $(id -un)"

need=()
for b in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client; do
  command -v "${b%%:*}" >/dev/null || [ -x "/usr/sbin/${b%%:*}" ] || need+=("${b##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get to install ${need[*]}"
  log "installing ${need[*]} (apt-get, ~1 min)"
  # Debian's maintainer scripts may try to start the services; without systemd that is refused
  # (policy-rc.d exit 101), and the daemons are started below instead.
  pol=/usr/sbin/policy-rc.d; made_pol=0
  if [ ! -e "$pol" ]; then printf '#!/bin/sh\nexit 101\n' > "$pol"; chmod +x "$pol"; made_pol=1; fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      munge slurmctld slurmd slurm-client; } > /tmp/slurm-apt.log 2>&1 \
    || { [ $made_pol = 1 ] && rm -f "$pol"; tail -20 /tmp/slurm-apt.log >&2; die "apt-get install failed (log: /tmp/slurm-apt.log)"; }
  [ $made_pol = 1 ] && rm -f "$pol"
fi
PATH="/usr/sbin:$PATH"

# --- munge: a key (the package creates one; make sure) and the daemon
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true; chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- munged --force 2>/dev/null || munged --force
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf for this host
host="$(hostname -s)"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm-smaug
if [ ! -f "$CONF" ] || grep -qF "$MARK" "$CONF"; then
  hw="$(slurmd -C | head -1)"  # NodeName=... CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..
  hw="$(echo "$hw" | sed -E 's/^NodeName=[^ ]+ //; s/ *UpTime=.*//')"
  mem="$(echo "$hw" | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')"
  hw="$(echo "$hw" | sed -E "s/RealMemory=[0-9]+/RealMemory=$(( mem * 9 / 10 ))/")"  # headroom: memory drifts
  new="$(cat <<EOF
$MARK
ClusterName=smauglocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPidFile=/run/slurm-smaug/slurmctld.pid
SlurmdPidFile=/run/slurm-smaug/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
KillWait=30
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)"
  if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new" ]; then
    log "writing $CONF for $host ($hw)"
    echo "$new" > "$CONF"
    changed=1
  fi
else
  log "$CONF exists and was not written by this script: using it as it is"
fi

running() { [ -f "/run/slurm-smaug/$1.pid" ] && kill -0 "$(cat "/run/slurm-smaug/$1.pid")" 2>/dev/null; }
if [ "${changed:-0}" = 1 ]; then
  for p in slurmd slurmctld; do running $p && { kill "$(cat /run/slurm-smaug/$p.pid)"; sleep 1; }; done
fi
if ! running slurmctld; then log "starting slurmctld"; slurmctld -i || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; fi
if ! running slurmd; then log "starting slurmd"; slurmd || die "slurmd did not start (see /var/log/slurm/slurmd.log)"; fi

for _ in $(seq 60); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
  case "$state" in idle|mix|alloc) break ;; down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;; esac
  sleep 1
done
state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
case "$state" in
  idle|mix|alloc) log "ready: node $host is $state ($(sinfo -h -o '%c CPUs, %m MB' -n "$host"))" ;;
  *) tail -5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
     die "node $host is '${state:-unknown}', not idle (logs above)" ;;
esac
