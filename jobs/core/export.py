"""Log a trained recommender as the MLflow pyfunc every consumer serves (the one scoring contract).

Any family that can write its model as ``user_factors @ item_factorsᵀ + item_bias`` (MF: the
embeddings; EASE: the history rows and Bᵀ) logs it through ``log_recsys_model``: the
``recsys.npz`` artifact (``jobs.core.model.save_artifact``), the serving code
(``jobs/core/model.py`` and what it imports, so a loader needs no checkout) and the serving
signature. Scoring, the gate's pyfunc, infra validation and the monitor then read every family
the same way.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jobs.core.schema import MODEL_FILE
from jobs.core.snapshots import TrainData


def log_recsys_model(mlflow: Any, arrays: dict[str, np.ndarray], data: TrainData, default_k: int) -> Any:
    """Log ``arrays`` (``user_factors``, ``item_factors``, ``item_bias``) as the run's ``model``.

    Args:
        mlflow: the ``mlflow`` module, inside an active run.
        arrays: the factors; the id maps, popularity and seen items come from ``data``.
        data: the training snapshot.
        default_k: recommendations per user when the request gives no ``k`` (``scoring.k``).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``).
    """
    import pandas as pd
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    from jobs.core import model as model_module

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "k", required=False)]),
        outputs=Schema(
            [ColSpec("long", "user_id"), ColSpec(Array("long"), "item_ids"), ColSpec(Array("double"), "scores")]
        ),
    )
    example = pd.DataFrame({"user_id": data.user_ids[: min(3, data.n_users)].astype(np.int64)})
    requirements = [
        f"mlflow-skinny=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
    ]
    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        npz = Path(tmp) / MODEL_FILE
        model_module.save_artifact(
            str(npz),
            **arrays,
            user_ids=data.user_ids,
            item_ids=data.item_ids,
            popularity=data.popularity,
            seen=data.seen(),
            default_k=default_k,
        )
        code = Path(tmp) / "code" / "jobs"
        (code / "core").mkdir(parents=True)
        core = Path(model_module.__file__).parent
        for name in ("model.py", "ids.py", "__init__.py"):
            shutil.copy2(core / name, code / "core" / name)
        shutil.copy2(core.parent / "__init__.py", code / "__init__.py")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=model_module.RecsysPyfunc(),
            artifacts={model_module.ARTIFACT_KEY: str(npz)},
            code_paths=[str(code)],
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
        )
