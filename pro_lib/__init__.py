"""PRO: prompt-aware multi-objective alignment (algorithm library).

`pro_lib` is the algorithm library behind the `pro` command. It never imports kfp or
streamlit; the platform layers (components/, pipelines/, ui/) sit on top of it.
"""

__version__ = "0.1.0"   # the one definition: pyproject.toml, `pro --version`, image tags (components, scripts/build_images.sh) read it
