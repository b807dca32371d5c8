#!/usr/bin/env bash
# Models trained on EchoNet-like phantom videos, for `echogains analyze` on EchoNet AVIs (issue 15).
#
# The demo weights were trained on CAMUS-like stills (128 x 96, anisotropic pixels); on EchoNet-like videos
# (112 x 112, square pixels) they fail on some loops (experiments/results/analyze_phantom). A user of EchoNet-Dynamic
# trains on its traced ED/ES frames; this script does the same on the phantom's `echonet` layout:
#   1. make-phantom --layout echonet (seed 1000: no patient of the test loops, which use seed 0), convert-echonet;
#   2. the demo nnU-Net recipe (nnUNetTrainerEchoDemo) on that dataset;
#   3. the demo Echo-DND recipe (tiny, 64 px, 3000 steps, the Makefile's demo-weights settings) on it;
#   4. experiments/analyze_phantom.py on the 10 test AVIs with each model.
# Every step is skipped when its output exists (rerun to continue). CPU, one thread.
#
#   bash experiments/echonet_models.sh [WORK]      # WORK defaults to build/echonet_models
set -euo pipefail
WORK=${1:-build/echonet_models}
PY=${PY:-.venv/bin/python}
N_TRAIN=${N_TRAIN:-120}
DATA=$WORK/Dataset602_PhantomEchoNet
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$WORK"

if [ ! -f "$WORK/echonet/FileList.csv" ]; then
    $PY -m echogains make-phantom "$WORK/echonet" --layout echonet --n_patients "$N_TRAIN" --seed 1000 --overwrite \
        --progress False
fi
if [ ! -f "$DATA/dataset.json" ]; then
    $PY -m echogains convert-echonet "$WORK/echonet" "$DATA" --overwrite --progress False
fi

NNUNET_ENV=(nnUNet_raw="$PWD/$WORK" nnUNet_preprocessed="$PWD/$WORK/nnUNet_preprocessed"
    nnUNet_results="$PWD/$WORK/nnUNet_results" nnUNet_extTrainer="$PWD/nnunet_ext/trainers"
    nnUNet_def_n_proc=1 nnUNet_n_proc_DA=1 ECHOGAINS_NNUNET_SEED=0)
NNUNET_MODEL=$WORK/nnUNet_results/Dataset602_PhantomEchoNet/nnUNetTrainerEchoDemo__nnUNetPlans__2d
if [ ! -f "$NNUNET_MODEL/fold_0/checkpoint_final.pth" ]; then
    env "${NNUNET_ENV[@]}" .venv/bin/nnUNetv2_plan_and_preprocess -d 602 -c 2d -np 1 -npfp 1 --verify_dataset_integrity
    env "${NNUNET_ENV[@]}" .venv/bin/nnUNetv2_train 602 2d 0 -tr nnUNetTrainerEchoDemo -device cpu
fi
if [ ! -f experiments/results/analyze_phantom_echonet_nnunet/analyze_phantom.json ]; then
    $PY -m experiments.analyze_phantom --out experiments/results/analyze_phantom_echonet_nnunet \
        --work "$WORK/analyze_nnunet" --layouts echonet --model nnunet --model_path "$NNUNET_MODEL" --budget_s 100000 \
        --no-tta --detect_on volume
fi
# SEED CURVE SUFFIX, with nnU-Net's mirroring TTA (analyze's default): on the volume curve the tuning
# patients (seed 7), then the test loops; on the LV area curve (analyze's default since then) the test loops
for RUN in "7 volume _seed7" "0 volume" "0 area"; do
    set -- $RUN
    NAME=analyze_phantom_echonet_nnunet_tta${3:-}$([ "$2" = area ] && echo _area || echo "")
    if [ ! -f "experiments/results/$NAME/analyze_phantom.json" ]; then
        $PY -m experiments.analyze_phantom --seed "$1" --detect_on "$2" --out "experiments/results/$NAME" \
            --work "$WORK/analyze_nnunet_tta${3:-}" --layouts echonet --model nnunet --model_path "$NNUNET_MODEL" \
            --budget_s 100000
    fi
done

ECHO_DND=$WORK/echo_dnd_tiny
if [ ! -f "$ECHO_DND/model.pt" ] || [ "$(tail -1 "$ECHO_DND/metrics.csv" | cut -d, -f1)" != "3000" ]; then
    $PY -m monai.bundle run --config_file bundles/echo_dnd/configs/train.json \
        --dataset_dir "$DATA" --output_dir "$ECHO_DND" --network_config tiny --image_size 64 \
        --steps 3000 --batch_size 8 --lr 2e-4 --val_every 250 --val_steps 10 --save_every 250 --seed 0 --device cpu \
        --weight_decay 0 --kl_form vb --progress False
fi
if [ ! -f experiments/results/analyze_phantom_echonet_echo_dnd/analyze_phantom.json ]; then
    $PY -m experiments.analyze_phantom --out experiments/results/analyze_phantom_echonet_echo_dnd \
        --work "$WORK/analyze_echo_dnd" --layouts echonet --model echo_dnd --model_path "$ECHO_DND/model.pt" \
        --budget_s 100000 --ensemble 2 --detect_on volume
fi
# SEED ENSEMBLE CURVE SUFFIX: on the volume curve ensemble 2 and 4 on the tuning patients (seed 7), then ensemble 4 on
# the test loops; on the LV area curve (analyze's default since then) ensemble 4 on the tuning patients, then the test
# loops with ensemble 2 and 4. A work folder's patients are analysed again when written with other settings.
for RUN in "7 2 volume _seed7" "7 4 volume _e4_seed7" "0 4 volume _e4" "7 4 area _e4_seed7" "0 2 area" "0 4 area _e4"; do
    set -- $RUN
    NAME=analyze_phantom_echonet_echo_dnd${4:-}$([ "$3" = area ] && echo _area || echo "")
    if [ ! -f "experiments/results/$NAME/analyze_phantom.json" ]; then
        $PY -m experiments.analyze_phantom --seed "$1" --ensemble "$2" --detect_on "$3" \
            --out "experiments/results/$NAME" --work "$WORK/analyze_echo_dnd${4:-}" \
            --layouts echonet --model echo_dnd --model_path "$ECHO_DND/model.pt" --budget_s 100000
    fi
done
