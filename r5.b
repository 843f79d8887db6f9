error: run dir /tmp/wt3/race5 is in use by process 8913; wait for it to finish or use another --run-dir
