# Shared by the side-by-side scenario scripts (sourced from the repository root): the build, free ports,
# starting and stopping the servers under test, and tokens for the room-auth plugin.
#
# Before `bench_setup` a script sets `profile` (release, or debug for the CI smoke) and `out`.

bench_setup() {
  local target=${CARGO_TARGET_DIR:-target}
  if [ "$profile" = release ]; then
    cargo build --quiet --release -p ioplex -p ioplex-bench
  fi
  bin="$target/$profile"
  (cd bench/node && npm ci --no-audit --no-fund --silent)
  # One process may hold 20,000 files on these machines; servers and generators inherit this.
  ulimit -n 20000 2>/dev/null || true
  mkdir -p "$out"
  started=()
  trap 'stop_all' EXIT
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on $1" >&2
  return 1
}

# start_server LABEL PORT [ioplex options...]: ioplex for labels starting with "ioplex", the floor
# server (`ioplex-bench floor-server`) for labels starting with "floor", else the Node reference server (bench/node/server.mjs, which reads REDIS_URL and PLUGINS_SECRET from the environment).
# Sets server_pid and returns once the port accepts connections.
start_server() {
  local label=$1 port=$2
  shift 2
  # With `server_cpus` set (e.g. 0), the server runs pinned to those CPUs (taskset).
  local pin=()
  [ -n "${server_cpus:-}" ] && pin=(taskset -c "$server_cpus")
  case $label in
    ioplex*) RUST_LOG=warn "${pin[@]}" "$bin/ioplex" --port "$port" --host 127.0.0.1 "$@" >>"$out/servers.log" 2>&1 & ;;
    floor*) "${pin[@]}" "$bin/ioplex-bench" --port "$port" floor-server >>"$out/servers.log" 2>&1 & ;;
    *) PORT=$port "${pin[@]}" node bench/node/server.mjs >>"$out/servers.log" 2>&1 & ;;
  esac
  server_pid=$!
  started+=("$server_pid")
  wait_port "$port"
}

stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

stop_all() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# mint_token SECRET ROOMS: an HS256 JWT granting conversation:0 .. conversation:ROOMS-1.
mint_token() {
  node -e '
    const { createHmac } = require("node:crypto");
    const [secret, rooms] = process.argv.slice(1);
    const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const conversations = Array.from({ length: Number(rooms) }, (_, i) => String(i));
    const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "bench", company: "bench", conversations })}`;
    console.log(`${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`);
  ' "$1" "$2"
}

# last_p99_over MS FILE: did the last result in FILE have p99 above MS?
last_p99_over() {
  node -e 'const l=require("fs").readFileSync(process.argv[2],"utf8").trim().split("\n").map(JSON.parse).at(-1); process.exit(l.p99_ms > Number(process.argv[1]) ? 0 : 1)' "$1" "$2"
}
