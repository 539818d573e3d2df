#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the cluster tests and for trying `sep-bench cluster` locally.
#
#   scripts/slurm-local.sh start    install (Debian packages, once) and start munged, slurmctld, slurmd; idempotent
#   scripts/slurm-local.sh stop     stop the daemons (by the pids in their pid files) and remove the pid files
#   scripts/slurm-local.sh status   say whether the cluster answers
#
# Needs root and apt-get (a CI container, a throwaway VM). Without them `start` exits 3 and says why; the tests
# marked `slurm` then skip with that reason. No accounting (slurmdbd): `sep-bench cluster status` reads job states
# from `scontrol show job`, which keeps finished jobs for MinJobAge (1 h here).
#
# The node: `localhost` with SLURM_LOCAL_CPUS slots (default: the machine's cores), one partition `main`.
# Preemption by partition priority is configured (a job in partition `urgent` requeues jobs of `main`), so a site's
# requeue behaviour can be tried here too.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by sep-bench scripts/slurm-local.sh"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
LOG_DIR=/var/log/slurm
CPUS="${SLURM_LOCAL_CPUS:-$(nproc)}"

die() { echo "slurm-local: $*" >&2; exit "${2:-1}"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "cannot install SLURM: not root" 3
  command -v apt-get >/dev/null || die "cannot install SLURM: no apt-get" 3
  echo "slurm-local: installing slurmd slurmctld slurm-client munge (Debian packages)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
     slurmd slurmctld slurm-client munge >/dev/null) || die "apt-get install of SLURM failed" 3
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "slurm-local: $CONF exists and is not ours; using it as it is"
    return 0
  fi
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
  cat > "$CONF.tmp" <<EOF
$MARK
ClusterName=sepbench
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again once its old credential expires (the default 120 s is SLURM's requeue hold)
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
MinJobAge=3600
# SLURM's default: SIGTERM, then SIGKILL 30 s later to what is left of a cancelled, requeued or timed-out job
KillWait=30
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=localhost CPUs=$CPUS State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  alive "$MUNGE_PID" && return 0
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  rm -f "$MUNGE_PID" /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged
}

start() {
  install_packages
  [ "$(id -u)" = 0 ] || die "cannot start SLURM daemons: not root" 3
  write_conf
  start_munge
  if ! alive "$CTLD_PID"; then rm -f "$CTLD_PID"; slurmctld; fi
  if ! alive "$SLURMD_PID"; then rm -f "$SLURMD_PID"; slurmd -N localhost; fi
  for _ in $(seq 1 100); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "slurm-local: up ($(sinfo -h -N -o '%N %c CPUs %T' | head -1))"
      return 0
    fi
    # a node left DOWN by an earlier stop comes back with an explicit resume
    scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    sleep 0.2
  done
  die "the node did not come up; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
}

stop_one() {  # pid file, name
  if alive "$1"; then
    local pid; pid="$(cat "$1")"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"  # Debian's prerm would otherwise run scancel against a dead controller
}

stop() {
  stop_one "$SLURMD_PID"
  stop_one "$CTLD_PID"
  stop_one "$MUNGE_PID"
  echo "slurm-local: stopped"
}

status() {
  if command -v sinfo >/dev/null && alive "$CTLD_PID" && sinfo -h >/dev/null 2>&1; then
    sinfo -N
  else
    echo "slurm-local: not running"; exit 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" 2 ;;
esac
