"""The infer phase of one server's models: soak's add/sub models get a burst of requests, each
response checked exactly; a user model is exercised from its plan, made once per load from the
server's metadata. What each model answered goes to the lifecycle's `Tally`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from soak.errors import ServerError, ServerTimeout
from soak.target.interface import NOT_CHECKED
from soak.workload import addsub, inject
from soak.workload.models import ModelPlan, ModelSettings, UserModelError, exercise, plan_on
from soak.workload.repos import ERROR_TOKEN
from soak.workload.tally import Fail, Tally

if TYPE_CHECKING:
    from soak.target.interface import ModelServer
    from soak.workload.config import LifecycleConfig
    from soak.workload.record import LifecycleRecord


class Inference:
    """Inputs, kept responses and plans of one lifecycle's models, across its iterations."""

    def __init__(
        self, config: LifecycleConfig, leaker: inject.ResponseLeaker, tally: Tally
    ) -> None:
        self.config = config
        self.leaker = leaker
        self.tally = tally
        self.rng = np.random.default_rng(config.seed)
        # Separate stream, so that a correct model sees the same inputs whatever the fraction.
        self.fail_rng = np.random.default_rng((config.seed, 1))
        self.pinned: set[str] = set()  # models with a kept response: they cannot unload
        # Per loaded user model, its plan: made once per load, from the server's metadata.
        self.plans: dict[str, ModelPlan] = {}
        self.settings = {s.name: s for s in config.user_models.models}

    def loaded(self, model: str) -> None:
        """A fresh load of `model`: a user model is planned again, once."""
        self.plans.pop(model, None)

    def infer(
        self,
        server: ModelServer,
        model: str,
        record: LifecycleRecord,
        fail: Fail,
        budget_s: float,
    ) -> None:
        """Exercise `model`, counting in `record`, each problem to `fail`; ServerTimeout when
        it overran `budget_s` (what is left of the infer phase), and the caller declares the
        phase hung."""
        if model in self.settings:
            self._user(server, self.settings[model], record, fail, budget_s)
        else:
            self._addsub(server, model, record, fail, budget_s)

    def _addsub(
        self, server: ModelServer, model: str, record: LifecycleRecord, fail: Fail, budget: float
    ) -> None:
        """One burst of `inferences_per_model` requests, `concurrency` in flight; every
        response checked exactly. The inputs and expected outputs are drawn and computed once
        per burst, in the order one request at a time drew them (a, then b, per request)."""
        cfg = self.config
        count = cfg.inferences_per_model
        if count <= 0:
            return
        burst = addsub.draw(
            self.rng, self.fail_rng, count, cfg.datatype, cfg.behaviour, cfg.error_fraction
        )

        def keep(_index: int) -> bool:
            kept = self.leaker.keep_next()
            if kept:
                self.pinned.add(model)
            return kept

        def on_result(i: int, result: dict | None, error: ServerError | None) -> bool:
            if error is not None:
                if burst.must_fail[i] and ERROR_TOKEN in error.message:
                    record.inferences += 1
                    record.errors += 1
                    record.answered(model, errors=1)
                    self.tally.add(model, errors=1)
                    return True
                fail("infer", f"{model}: {error.message}")
                return False
            record.inferences += 1  # completed; whether it was right is checked next
            record.responses += 1
            if burst.must_fail[i]:
                fail(
                    "infer",
                    f"{model}: succeeded, but behaviour {cfg.behaviour.value} must fail this "
                    "request",
                )
                return False
            if result is not NOT_CHECKED:  # NOT_CHECKED: its generator could not compare it
                problems = addsub.validate(
                    result or {}, burst.sums[i], burst.diffs[i], cfg.memory_type
                )
                if problems:
                    fail("infer", f"{model}: {'; '.join(problems)}")
                    return False
            record.answered(model, ok=1)
            self.tally.add(model, ok=1)
            return True

        handed = server.infer_many(
            model,
            burst.inputs(),
            addsub.OUTPUTS,
            on_result,
            concurrency=cfg.concurrency,
            memory_type=cfg.memory_type,
            timeout_s=budget,
            device=cfg.gpu_device,
            keep=keep,
            expected=lambda i: (
                None
                if burst.must_fail[i]
                else {addsub.OUTPUTS[0]: burst.sums[i], addsub.OUTPUTS[1]: burst.diffs[i]}
            ),
        )
        inject.per_request(cfg.injection, handed)

    def _user(
        self,
        server: ModelServer,
        settings: ModelSettings,
        record: LifecycleRecord,
        fail: Fail,
        budget: float,
    ) -> None:
        """Exercise a user model, planned from this server's metadata once per load."""
        cfg = self.config
        try:
            plan = self.plans.get(settings.name)
            if plan is None:
                plan = self.plans[settings.name] = plan_on(server, settings)
            done = exercise(
                server,
                plan,
                cfg.inferences_per_model,
                self.rng,
                cfg.memory_type,
                budget,
                cfg.gpu_device,
            )
        except ServerTimeout:
            raise
        except (ServerError, UserModelError) as exc:
            message = exc.message if isinstance(exc, ServerError) else str(exc)
            fail("infer", f"{settings.name}: {message}")
            return
        inject.per_request(cfg.injection, done.requests)
        record.inferences += done.requests
        record.responses += done.responses
        for problem in done.problems:
            fail("infer", problem)
        if not done.problems:
            self.tally.add(settings.name, ok=done.requests)
