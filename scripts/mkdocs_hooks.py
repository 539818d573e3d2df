"""MkDocs hook: the plots under results/plots/ become files of the site, so that pages show them as
``results/plots/<name>.png`` without a copy under docs/."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

PLOTS = Path("results") / "plots"


def on_files(files: Files, config) -> Files:
    root = Path(config.config_file_path).parent
    for plot in sorted((root / PLOTS).glob("*.png")):
        files.append(File((PLOTS / plot.name).as_posix(), src_dir=str(root), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files
