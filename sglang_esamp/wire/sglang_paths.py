"""Dotted paths of the SGLang classes ESamp hooks or reads (sglang==0.5.23), named once for the hook table
(``sglang_esamp.hooks``) and the shims that declare their targets (``runtime.shims``)."""
MODEL_RUNNER = "sglang.srt.model_executor.model_runner.ModelRunner"
SCHEDULER = "sglang.srt.managers.scheduler.Scheduler"
TOKENIZER_MANAGER = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
OUTPUT_STREAMER = "sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer"
WEIGHT_UPDATER = "sglang.srt.model_executor.model_runner_components.weight_updater.WeightUpdater"
