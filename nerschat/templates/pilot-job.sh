#!/bin/bash
# nerschat launch {{launch_id}}: {{summary}}
# The body of one pilot job: run by the job script that Parsl's provider rendered and
# submitted (after the site's worker_init). Each pilot publishes under the id of the
# `pending` registry entry written at submission, which its own entry replaces.
trap '' HUP
{{exports}}
# The GPUs this job was given (from SLURM), one slice per pilot.
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
else
    gpus=({{gpu_range}})
fi
gpu_slice() { local IFS=,; echo "${gpus[*]:$1:$2}"; }
pids=()
{{pilots}}
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for pid in "${pids[@]}"; do
    while true; do
        wait "$pid"; rc=$?
        if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
        break
    done
    [ "$rc" -eq 0 ] || status=$rc
done
# A pilot that failed before publishing leaves its pending entry: remove it.
rm -f {{entries}}
exit $status
