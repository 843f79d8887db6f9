error: run dir /tmp/wt3/race1 is in use by process 8869; wait for it to finish or use another --run-dir
