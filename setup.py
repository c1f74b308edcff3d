"""Installable package for the two-stage TFX recommender.

`pip install -e .` makes the pipeline, components, transform and trainer
modules importable by import path, which is how TFX runs them (locally and in
the Kubeflow container) instead of building module-file wheels.
"""
import setuptools

setuptools.setup(
    name="tfx-two-stage-recommender",
    version="0.1.0",
    description="Two-stage (retrieval + ranking) TFRS recommender as a TFX pipeline",
    python_requires=">=3.10,<3.11",
    packages=setuptools.find_packages(include=[
        "common", "common.*",
        "pipeline", "pipeline.*",
        "components", "components.*",
        "transform", "transform.*",
        "trainer_modules", "trainer_modules.*",
        "serving", "serving.*",
        "runners", "runners.*",
    ]),
    py_modules=["local_runner", "kubeflow_runner"],
    package_data={"pipeline": ["schemas/*.pbtxt"]},
    include_package_data=True,
    entry_points={"console_scripts": ["recommend = serving.cli:main"]},
    # Versions are pinned in requirements.lock; these are the direct needs.
    install_requires=[
        "tfx[kfp]==1.16.0",
        "tensorflow-recommenders==0.7.7",
        "tensorflow-datasets==4.9.10",
        "dill",
        "pydantic>=2,<3",
    ],
)
