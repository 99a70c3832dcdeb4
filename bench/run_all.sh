#!/usr/bin/env bash
# Regenerate every benchmark report: docs/benchmarks.md (quality), docs/bench-embedded.md and
# docs/performance.md. Needs the broker (scripts/kafka start). About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [[ ${SKIP_EMBEDDED:-} != 1 ]]; then
  "$PY" bench/embedded.py --debtors 10000 --months 15 --report docs/bench-embedded.md
fi
# with the peer (issue 17) when the bench extra is installed: pip install -e '.[bench]'
"$PY" bench/kafka_path.py throughput --events 80436 --debtors 1000 --months 12 --profile --two
for run in 1 2 3; do
  "$PY" bench/kafka_path.py latency --rate 1000 --seconds 30 --name "latency-live-$run"
done
"$PY" bench/kafka_path.py latency --rate 1000 --seconds 30 --erasure-heartbeat-ms 100 --name latency-live-hb
"$PY" bench/kafka_path.py latency --rate 1000 --seconds 30 --historical --name latency-historical
"$PY" bench/kafka_path.py latency --rate 1000 --seconds 30 --ceiling --name latency-floor-live
"$PY" bench/kafka_path.py state --debtors 100000
"$PY" bench/kafka_path.py report
