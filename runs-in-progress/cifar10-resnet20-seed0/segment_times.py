"""Each segment's training time, from the timestamps MLflow gave the run's logged losses, pauses left out.

    python segment_times.py mlflow.db RUN_ID "MACHINE|PRECISION|FIRST|LAST" ... > segments.tsv

Writes the table `scripts/publish_result.py --segments` reads. The training was paused (SIGSTOP) while
tests ran and resumed on other machines, so its checkpoint's `seconds` count paused time. Here an
interval between two logged steps that took more than three times the segment's median pace per
iteration is taken as paused and counted at the median pace, as are the iterations of the segment
before its first and after its last logged step.
"""

import sqlite3
import statistics
import sys

PAUSED = 3.0


def main(database: str, run_id: str, *segments: str) -> None:
    rows = sqlite3.connect(f"file:{database}?mode=ro", uri=True).execute(
        "select step, timestamp from metrics where key = 'loss' and run_uuid = ? order by step", (run_id,)).fetchall()
    print("machine\tprecision\tfirst_iteration\tlast_iteration\tseconds")
    for segment in segments:
        machine, precision, first, last = segment.split("|")
        first, last = int(first), int(last)
        logged = [(step, ms / 1000) for step, ms in rows if first < step <= last]
        pairs = list(zip(logged, logged[1:]))
        pace = statistics.median((t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in pairs)
        seconds = sum(t2 - t1 if t2 - t1 <= PAUSED * pace * (s2 - s1) else pace * (s2 - s1)
                      for (s1, t1), (s2, t2) in pairs)
        seconds += pace * ((logged[0][0] - first) + (last - logged[-1][0]))
        print(f"{machine}\t{precision}\t{first}\t{last}\t{seconds:.0f}", flush=True)
        print(f"{first}-{last}: {len(pairs)} intervals, median {pace:.3f} s/iteration, {seconds / 3600:.2f} h",
              file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
