"""The asyncio rollout pipeline: problems -> G samples each -> verified on arrival -> filtered groups -> a batch.

    async with SandboxPool(workers=2, preload=solver.preload) as pool, create_backend("local", model=m) as gen:
        rollout = Rollout(backend=gen, verifier=SolverVerifier(pool, solver), prompts=prompt_builder,
                          problems=problems, settings=RolloutSettings(...), sampling=SamplingParams(...),
                          recorder=recorder)
        async with rollout:
            for step in range(steps):
                result = await rollout.next_batch()      # RolloutResult: kept groups, per-sample columns, metrics
                train = learner.step(result.learner_batch()) if len(result) else {}
                recorder.metrics({**result.metrics, **train})
                await rollout.update_weights(learner.full_weights())

How one batch is made (`_collect`): a generation round sends `prompts_per_step` prompts with group size G to
the backend; every completion is put on a bounded queue the moment the backend yields it, and
`verify_concurrency` workers (one per sandbox worker) verify them while the rest of the round still decodes.
A group is judged by the filters (`engine.filters`) the moment its G-th outcome lands. Another round starts
as soon as the kept groups plus the groups still undecided cannot fill the batch, up to `max_gen_batches`
rounds; groups judged after the batch is full are surplus. Infrastructure failures (sandbox_error, backend
errors, aborts, verifier timeouts) are excluded from training and counted, never scored 0.

Overlap with the learner: a producer task makes batches ahead of the learner. Batch k may start generating
once the learner has made k - max_staleness weight updates (`update_weights`), so `max_staleness: 0` is
strictly on-policy and 1 lets batch k+1 generate while the learner trains on batch k. At hand-over each
sample's staleness (backend version now minus the version that generated its oldest token) is measured, and
groups over the bound are dropped as "stale". With `partial_rollouts` (max_staleness >= 1, a backend that can
resume) `update_weights` does not wait for the samples still decoding: it cuts them short, and each resumes from
prompt + its tokens on the new weights, its tokens keeping their versions (`engine.rollout.partial`).

Memory is bounded: the verify queue holds at most `queue_size` completions (a slow sandbox stalls the reading
of the generation stream, not the heap), one finished batch waits for the learner, and a round holds at most
prompts_per_step * G completions. Cancelling (Ctrl-C) cancels the producer, the round and the verifications
(the sandbox kills their programs), writes the unfinished batch's metrics row marked "interrupted" and flushes.

The verifier is `engine.verifier`'s (any object with an async `verify(problem, text)` fits); problems come in
`engine.data.stream.ProblemStream`'s training order; the filters that judge groups are `engine.filters`'.
"""

from engine.rollout.batch import Group, RolloutResult, RolloutSettings, RolloutState, Sample
from engine.rollout.pipeline import Rollout, round_sampling

__all__ = ["Group", "Rollout", "RolloutResult", "RolloutSettings", "RolloutState", "Sample", "round_sampling"]
