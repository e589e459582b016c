#!/usr/bin/env bash
# The benchmarks of one GPU lease, run side by side: each lane is one benchmark process pinned to two CPU
# cores (its DataLoader workers follow the pinning), all sharing the GPU; a lane that outlives LIMIT seconds is stopped
# and keeps the seeds it finished (the benchmarks write their CSV after every seed). Not a test.
#
#   XRAY_DATA=/path/to/chest_xray bash bench/gpu_runs.sh            # the GPU runs: 224 px, 20 (classifiers) or 12 epochs
#   XRAY_DATA=... SIZE=32 EPOCHS=1 SEEDS=0 LIMIT=600 bash bench/gpu_runs.sh   # a smoke test of every lane on a CPU
#
# Results land in bench/results/*_gpu* (NAME.csv and NAME.md per benchmark) the lanes' logs in bench/results/gpu_logs,
# the embeddings' classifiers and the synthetic-opacity models in bench/results/gpu_models.
set -u
SIZE=${SIZE:-224}; EPOCHS=${EPOCHS:-20}; SEEDS=${SEEDS:-0,1,2}; LIMIT=${LIMIT:-470}; SHORT=${SHORT:-12}
SMALL=$(( SIZE * 4 / 7 ))   # 128 at 224: the anomaly models' and the phantoms' size
logs=bench/results/gpu_logs; models=bench/results/gpu_models; mkdir -p $logs $models
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
lane() { # cores name command...
    local cores=$1 name=$2; shift 2
    local pin="taskset -c $cores"; [ "$(nproc)" -ge 16 ] || pin=""   # no pinning on a smaller machine
    ( OMP_NUM_THREADS=2 timeout $LIMIT $pin "$@" > $logs/$name.log 2>&1; echo "exit $?" >> $logs/$name.log ) &
}
lane 0-1 binary       python bench/classifiers.py --name binary_gpu$SIZE --task binary --size $SIZE --epochs $EPOCHS --seeds $SEEDS
lane 2-3 weighted     python bench/classifiers.py --name binary_weighted_gpu$SIZE --task binary --balance weighted --size $SIZE --epochs $EPOCHS --seeds $SEEDS
lane 4-5 multiclass   python bench/classifiers.py --name multiclass_gpu$SIZE --task multiclass --size $SIZE --epochs $EPOCHS --seeds $SEEDS
lane 6-7 embeddings   python bench/embeddings.py --name embeddings_gpu$SIZE --size $SIZE --epochs $SHORT --seeds $SEEDS --keep $models/embeddings
lane 8-9 arch         python bench/experiments.py --group arch --size $SIZE --epochs $SHORT --seeds $SEEDS --name exp_binary_arch_gpu$SIZE
lane 10-11 explain    bash -c "for n in 1500 3000 6000; do python bench/explain.py --name explain_phantoms_gpu_n\$n --n-train \$n --size $SMALL --epochs $SHORT --seeds $SEEDS; done"
lane 12-13 explain256 python bench/explain.py --name explain_phantoms_gpu_256px --n-train 3000 --size $(( SMALL * 2 )) --epochs $SHORT --seeds $SEEDS
lane 14-15 anomaly    bash -c "python bench/anomaly.py --group opacity --size $SMALL --seeds $SEEDS --name anomaly_opacity${SMALL}_gpu --keep $models/anomaly; python bench/anomaly.py --group opacity --size $SIZE --seeds $SEEDS --name anomaly_opacity${SIZE}_gpu --keep $models/anomaly"
wait
tail -n 3 $logs/*.log
