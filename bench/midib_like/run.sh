#!/bin/bash
# A MIDI-B-like benchmark: build a synthetic cohort over real pixel data with its own answer key (15 patients,
# ~184 files of 15 modalities), de-identify it with both profiles, score it MIDI-B style (score.py says how).
#   bash bench/midib_like/run.sh [WORKDIR]        (default: a new temporary directory; ~5 min on 2 cores)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${1:-$(mktemp -d /tmp/deidflow-midib-XXXXXX)}
PY=$ROOT/.venv/bin/python
DF=$ROOT/.venv/bin/deidflow
mkdir -p "$WORK" && cd "$WORK" || exit 2
[ -d cohort/input ] || $PY "$HERE/build_cohort.py" cohort || exit 2
export DEIDFLOW_KEY=midib-like-key-0123456789abcdef
export PREFECT_HOME=${PREFECT_HOME:-$ROOT/.prefect}
for label in tcia tcia-lists; do
  rm -rf out_$label out_$label-provenance link_$label; mkdir -p link_$label
  timeout 1200 $DF run cohort/input out_$label --workers 2 --linkage link_$label \
      --patient-map cohort/patient_map.csv --profile $label --json > run_$label.json 2> run_$label.err
  echo "profile $label: deidflow exit $?"
  $PY "$HERE/score.py" cohort out_$label link_$label $label --json res_$label.json > score_$label.txt 2> score_$label.err
  cat score_$label.txt | head -20
done
echo "work directory: $WORK"
