# End-to-end tests through the shardlora binary.
set(SL_E2E_DIR ${CMAKE_CURRENT_SOURCE_DIR}/e2e)

# sl_e2e(NAME SCRIPT TIMEOUT [property value ...]): bash tests/e2e/SCRIPT BINARY WORKDIR,
# label e2e, with the extra test properties given.
function(sl_e2e name script timeout)
  add_test(NAME ${name}
           COMMAND bash ${SL_E2E_DIR}/${script} $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work)
  set_tests_properties(${name} PROPERTIES LABELS e2e TIMEOUT ${timeout} ${ARGN})
endfunction()

sl_e2e(e2e_bad_input bad_input.sh 600)
# FIFOs and directories as every input kind (no hang), the silent accepts of issue 16 made
# refusals or warnings, CRC-valid manifests with no tensors or absurd steps, stale step-N.tmp
sl_e2e(e2e_hostile_inputs hostile_inputs.sh 300 PROCESSORS 2)
sl_e2e(e2e_train_cli train_cli.sh 600)
sl_e2e(e2e_plot plot.sh 120)
# TensorBoard event files and metrics.csv read by an independent checker (tracking_check.py:
# its own CRC-32C, TFRecord parser and tb_event.proto) against metrics.jsonl, across a
# resume and at dp=2; plot of two runs with a resume marker.
sl_e2e(e2e_tracking tracking.sh 300 PROCESSORS 2)
sl_e2e(e2e_data_pipeline data_pipeline.sh 600)
sl_e2e(e2e_merge merge.sh 900 RUN_SERIAL TRUE)
sl_e2e(e2e_generate_cli generate_cli.sh 600 PROCESSORS 2)
# eval / generate on non-finite numbers (exit 5, --out untouched), the adapter kinds they
# name, the PiSSA card's r / lora_alpha.
sl_e2e(e2e_eval_generate_inputs eval_generate_inputs.sh 600 PROCESSORS 2)
# train's edges: --epochs resumes at another global batch, row-stream refusals, strict
# metrics JSON, flag ranges, --config edge cases, quoted paths, cleanup of refused runs
sl_e2e(e2e_train_inputs train_inputs.sh 600 PROCESSORS 2)
# the names users already know: Hugging Face / TRL / PEFT aliases (flags, underscores, YAML
# and JSON configs) resolve to the same run; did-you-mean; grouped --help; --version
sl_e2e(e2e_cli_names cli_names.sh 300 PROCESSORS 2)
# a run directory belongs to one run: --resume none, another run's settings, a finished
# run re-run, --overwrite, stale per-rank summaries (sha256 of OUT before and after)
sl_e2e(e2e_run_safety run_safety.sh 300 PROCESSORS 2)
# what each command puts on stdout (results) and stderr (the rest), shortest floats in the
# files, the live bar's width and fields (COLUMNS and a pseudo-terminal)
sl_e2e(e2e_outputs outputs.sh 120)
# the adapter's model card: best eval, data files, versions, base_model; export = train's card
sl_e2e(e2e_model_card model_card.sh 120 PROCESSORS 2)

# The quick start itself (takes the build directory, not the binary).
add_test(NAME e2e_quickstart
         COMMAND bash ${SL_E2E_DIR}/quickstart.sh ${CMAKE_BINARY_DIR} ${CMAKE_BINARY_DIR}/test-work)
set_tests_properties(e2e_quickstart PROPERTIES LABELS e2e TIMEOUT 600 RUN_SERIAL TRUE)
# PEFT adapters in and out (issue 8): export / import / bad adapters, checked against the
# PEFT formula on the PyTorch reference model (tests/reference/peft_check.py).
foreach(t export import bad)
  add_test(NAME e2e_peft_${t}
           COMMAND bash ${SL_E2E_DIR}/peft_adapters.sh $<TARGET_FILE:shardlora> ${CMAKE_BINARY_DIR}/test-work ${t})
  set_tests_properties(e2e_peft_${t} PROPERTIES LABELS "e2e;reference" TIMEOUT 600 PROCESSORS 2)
endforeach()
# issue 15's safety nets: the lr schedule when --steps changes on resume, Ctrl-C (1 and 2
# ranks, twice), time-based checkpoints, MFU <= 100% at a long sequence
sl_e2e(e2e_train_ckpt train_ckpt.sh 300 PROCESSORS 2)
sl_e2e(e2e_sizes sizes.sh 300)
# the model's own Jinja chat template (Qwen3's real tokenizer files): train, preview, generate,
# and the refusals (raise_exception, a refused construct, bad kwargs, --chat-format mismatch)
sl_e2e(e2e_chat_template chat_template.sh 900)
# A quantised frozen base around train (issue 18): merge --base-dtype = eval of the quantised
# base + adapter, eval at tp=2, generate, the refusals (shapes naming the tensor, resume with
# another --base-dtype), what --compute-dtype bf16 runs on this CPU.
sl_e2e(e2e_quant_base quant_base.sh 300 PROCESSORS 2)
# --recompute layer = none byte for byte (adapter and --dump-grads) at tp 1, tp 2 and
# tp 2 x dp 2, LoRA with dropout and DoRA, smaller activation peak, resume across the two,
# the refusals
sl_e2e(e2e_recompute recompute.sh 600 PROCESSORS 2)
# shardlora plan against train (issue 19): frozen bytes per rank = summary-rank0.json's exactly
# (fp32, bf16, int8, nf4 at tp 1, 2, 4; biases, tied), TP and gradient bytes per step =
# comm_bytes (tp 2, dp 2, tp 4, recompute layer); a 7B-shaped config.json alone on 2 nodes of
# 24 GiB (nf4 fits at tp=1, fp32 not); pipeline rows against pp 2 and tp 2 x pp 3 runs per stage
# and the boundary formula, the 7B shape in fp32 fitting only with stages; bad input
sl_e2e(e2e_plan plan.sh 300 PROCESSORS 2)
