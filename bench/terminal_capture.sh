#!/usr/bin/env bash
# What a user sees in a real terminal (issue 20): runs costtax in tmux at a given width and
# saves the pane, terminal-wrapped lines joined (capture-pane -J), so a line longer than the
# terminal shows up as one long line.
#
#   bench/terminal_capture.sh 80 OUT.txt costtax profile --limit 2 --max-tokens 16 --out /tmp/run
#   bench/terminal_capture.sh 120 OUT.txt costtax report /tmp/copy-of-a-run
#   bench/terminal_capture.sh 80 OUT.txt bench/terminal_demo.py /tmp/demo-run   # a script: fake engine
#
# `report` and `plan` rewrite files in the run directory they read: point them at a copy.
# A real `profile` starts vLLM: wrap the call in `flock /tmp/costtax-heavy.lock` on a shared machine.
# Also writes OUT.frames/: the pane every 0.5 s while the command runs (for the "no frozen
# screen for more than ~2 s" check: python bench/terminal_frames.py OUT.frames).
set -euo pipefail
width=$1; out=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
session=costtax-capture-$$
frames="$out.frames"; rm -rf "$frames"; mkdir -p "$frames"
tmux new-session -d -s "$session" -x "$width" -y 50
tmux set-option -t "$session" history-limit 10000 >/dev/null
cmd=$(printf '%q ' "$@")
case "$1" in *.py) run="$root/.venv/bin/python $cmd" ;; *) run="$root/.venv/bin/python -m $cmd" ;; esac
tmux send-keys -t "$session" "clear; PYTHONPATH=$root $run; echo CAPTURE-EXIT=\$?" Enter
i=0
while :; do
  i=$((i + 1))
  pane=$(tmux capture-pane -p -t "$session")
  printf '%s\n' "$pane" > "$frames/$(printf %06d $i).txt"
  date +%s.%N > "$frames/$(printf %06d $i).t"
  grep -q '^CAPTURE-EXIT=' <<<"$pane" && break
  sleep 0.5
done
# joined lines, up to the exit marker (the shell prompt after it is not costtax's), trailing blanks cut
tmux capture-pane -J -p -t "$session" -S - | sed '/^CAPTURE-EXIT=/,$d' | sed -e 's/[[:space:]]*$//' > "$out"
tmux kill-session -t "$session"
python3 - "$out" "$width" <<'PY'
import sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
w = int(sys.argv[2])
over = [l for l in lines if len(l.rstrip()) > w]
print(f"{sys.argv[1]}: {len(lines)} lines, longest {max(map(len, lines), default=0)} characters, {len(over)} over {w}")
PY
