error: run dir /tmp/wt3/race4 is in use by process 8902; wait for it to finish or use another --run-dir
