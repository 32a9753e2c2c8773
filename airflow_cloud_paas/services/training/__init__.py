"""DEEP as a Service training: train, checkpoint and resume PyTorch classifiers, on CPU or CUDA.

- :mod:`.engine` runs the training loop (:class:`~.engine.Trainer`, :func:`~.engine.train`), describes its
  arguments (:class:`~.engine.TrainingSpec`, whose ``schema()`` the DEEPaaS API serves as its train arguments) and
  evaluates a model (:func:`~.engine.evaluate`);
- :mod:`.models` builds models by name (a small CNN for 8x8 digits, an MLP, torchvision's ResNets when installed);
- :mod:`.data` makes data sets (scikit-learn's bundled digits, synthetic images, ``.npz`` files);
- :mod:`.errors` holds the typed errors.

Nothing is imported here: torch is imported by the submodules that need it, and none of them needs Airflow.
"""
