"""The New service dialog: a model file and the serving options (engine, GPU, context, image)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import (
    Qt,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from podlab.core.models.store import StoredModel
from podlab.core.serving.container_spec import PODLAB_SERVER_IMAGE, ServiceOptions
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.host import Diagnosis
from podlab.core.serving.gpu.passthrough import WANTS, plan_passthrough
from podlab.core.serving.planning import ENGINE_CHOICES, SERVICE_NAME, ServeRequest
from podlab.ui.models.services_model import BADGE_COLOURS

GPU_TITLES = {
    "auto": "Auto (use a GPU when one can be passed)",
    "none": "None (CPU only)",
    "nvidia": "NVIDIA",
    "amd": "AMD",
    "intel": "Intel",
}
ENGINE_CHOICE_TITLES = {
    "auto": "Auto (Podman when found, else local)",
    "podman": "Podman container",
    "local": "Local process (llama-cpp-python)",
}
DEFAULT_IMAGE_TEXT = "Default (llama.cpp server for the GPU found)"


def _auto_spin(minimum: int, maximum: int, value: int, auto_text: str = "Auto") -> QSpinBox:
    """A spin box whose lowest value means "let Podlab / the server choose"."""
    spin = QSpinBox()
    spin.setRange(minimum, maximum)
    spin.setSpecialValueText(auto_text)
    spin.setValue(value)
    return spin


class NewServiceDialog(QDialog):
    """Model (from the store or a GGUF file), engine, GPU and serving options."""

    def __init__(
        self,
        models: list[StoredModel],
        report: GpuReport | None,
        *,
        engine: str = "auto",
        context_size: int = 4096,
        local_gpu: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        """`local_gpu`: the local engine's llama-cpp-python was built with GPU support (else
        the GPU choice is disabled for it, with the reason)."""
        super().__init__(parent)
        self.setObjectName("new-service-dialog")
        self.setWindowTitle("New service")
        self._report = report
        self._local_gpu = local_gpu
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("model")
        for entry in models:
            if entry.usable and entry.path.suffix.lower() == ".gguf":
                size = f" · {entry.size / 1024**2:.0f} MiB" if entry.size else ""
                self.model_combo.addItem(f"{entry.name}{size}", str(entry.path))
        self.model_combo.addItem("A GGUF file on this computer…", "")
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("service-name")
        self.name_edit.setAccessibleName("Service name")
        self.name_edit.setPlaceholderText("automatic: podlab-MODEL-ID")
        self.path_edit = QLineEdit()
        self.path_edit.setObjectName("model-path")
        self.path_edit.setAccessibleName("GGUF file to serve")
        self.path_edit.setPlaceholderText("/path/to/model.gguf")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)

        self.engine_combo = QComboBox()
        self.engine_combo.setObjectName("engine")
        for choice in ENGINE_CHOICES:
            self.engine_combo.addItem(ENGINE_CHOICE_TITLES.get(choice, choice), choice)
        self.engine_combo.setCurrentIndex(max(0, self.engine_combo.findData(engine)))
        self.gpu_combo = QComboBox()
        self.gpu_combo.setObjectName("gpu")
        for want in WANTS:
            self.gpu_combo.addItem(GPU_TITLES.get(want, want), want)
        self.gpu_note = QLabel()
        self.gpu_note.setObjectName("gpu-note")
        self.gpu_note.setWordWrap(True)
        self.gpu_note.setTextFormat(Qt.TextFormat.PlainText)

        self.ctx_spin = QSpinBox()
        self.ctx_spin.setObjectName("ctx-size")
        self.ctx_spin.setRange(256, 1_048_576)
        self.ctx_spin.setSingleStep(1024)
        self.ctx_spin.setValue(context_size)
        self.ctx_spin.setSuffix(" tokens")
        self.layers_spin = _auto_spin(-1, 999, -1, "Auto (all on a GPU, 0 on the CPU)")
        self.layers_spin.setObjectName("gpu-layers")
        self.threads_spin = _auto_spin(0, 512, 0)
        self.threads_spin.setObjectName("threads")
        self.parallel_spin = _auto_spin(0, 64, 0)
        self.parallel_spin.setObjectName("parallel")
        self.port_spin = _auto_spin(0, 65535, 0, "Auto (a free port)")
        self.port_spin.setObjectName("port")
        self.image_combo = QComboBox()
        self.image_combo.setObjectName("image")
        self.image_combo.setEditable(True)
        self.image_combo.addItem(DEFAULT_IMAGE_TEXT)
        self.image_combo.addItem(PODLAB_SERVER_IMAGE)
        self.image_combo.setToolTip(
            "Podman only. The default is llama.cpp's server image for the GPU found (CPU, CUDA, "
            f"ROCm, Intel); {PODLAB_SERVER_IMAGE} is Podlab's own llama-cpp-python image."
        )

        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Model", self.model_combo)
        form.addRow("GGUF file", path_row)
        form.addRow("Engine", self.engine_combo)
        form.addRow("GPU", self.gpu_combo)
        form.addRow("", self.gpu_note)
        form.addRow("Context size", self.ctx_spin)
        form.addRow("GPU layers", self.layers_spin)
        form.addRow("CPU threads", self.threads_spin)
        form.addRow("Parallel slots", self.parallel_spin)
        form.addRow("Port", self.port_spin)
        form.addRow("Server image", self.image_combo)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.start_button = self.buttons.addButton(
            "Start service", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.buttons.accepted.connect(self._accept_if_valid)
        self.buttons.rejected.connect(self.reject)
        self.problem = QLabel()
        self.problem.setObjectName("problem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(f"color: {BADGE_COLOURS['error']};")
        # Dynamic texts get fixed heights: a shown dialog whose minimum size changes makes
        # the offscreen platform warn, and a jumping dialog is unpleasant anyway.
        line = self.problem.fontMetrics().lineSpacing()
        self.problem.setFixedHeight(2 * line + 4)
        self.gpu_note.setFixedHeight(3 * line + 4)
        self.gpu_note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        note = QLabel(
            "The port is published on 127.0.0.1 unless the settings say otherwise. Parallel "
            "slots apply to llama.cpp's server; the local engine answers one request at a time."
        )
        note.setWordWrap(True)
        note.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(560)

        self.model_combo.currentIndexChanged.connect(self._model_chosen)
        self.gpu_combo.currentIndexChanged.connect(self._update_gpu_note)
        self.engine_combo.currentIndexChanged.connect(self._engine_chosen)
        self._engine_chosen()
        self._model_chosen()

    def set_model_path(self, path: str | Path) -> None:
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)
        self.path_edit.setText(str(path))

    def select_model(self, path: str | Path) -> None:
        """Pre-fill the model: its entry in the store list, else the GGUF file field (a model
        found in another tool's folder, whose file name does not end in .gguf)."""
        index = self.model_combo.findData(str(path))
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        else:
            self.set_model_path(path)

    def set_choice(self, combo: QComboBox, value: str) -> None:
        combo.setCurrentIndex(combo.findData(value))

    def _model_chosen(self) -> None:
        path = self.model_combo.currentData()
        if path:
            self.path_edit.setText(str(path))
        self.path_edit.setReadOnly(bool(path))

    def _engine_chosen(self) -> None:
        local = self.engine_combo.currentData() == "local"
        self.image_combo.setEnabled(not local)
        gpu_usable = not local or self._local_gpu
        self.gpu_combo.setEnabled(gpu_usable)
        self.gpu_combo.setToolTip(
            ""
            if gpu_usable
            else "The local engine's llama-cpp-python is built for the CPU only: it cannot use "
            "a GPU. Choose Podman (or install a GPU build) to use one."
        )
        self._update_gpu_note()

    def _browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Choose a GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if name:
            self.set_model_path(name)

    def _update_gpu_note(self) -> None:
        want = str(self.gpu_combo.currentData())
        engine = str(self.engine_combo.currentData())
        if self._report is None:
            self.gpu_note.setText("")
            return
        diagnosis = plan_passthrough(self._report, want).diagnosis
        text = diagnosis.message + (f"\nFix: {diagnosis.fix}" if diagnosis.fix else "")
        if engine == "local":
            found = self._report.gpus if want == "auto" else self._report.by_vendor(want)
            if not self._local_gpu:
                diagnosis = Diagnosis(
                    "ok", "Local engine on the CPU: its llama-cpp-python is a CPU-only build."
                )
            elif want != "none" and found:
                diagnosis = Diagnosis(
                    "ok",
                    f"Local engine: llama.cpp offloads to {found[0].label} if llama-cpp-python "
                    "was built with GPU support; the Device column shows what it really got.",
                )
            else:
                diagnosis = Diagnosis("ok", "Local engine on the CPU.")
            text = diagnosis.message
        elif engine == "auto" and self._report.gpus:
            text = "In Podman: " + text
        self.gpu_note.setText(text)
        colour = {"error": BADGE_COLOURS["error"], "warning": BADGE_COLOURS["warning"]}
        self.gpu_note.setStyleSheet(
            f"color: {colour[diagnosis.level]};" if diagnosis.level in colour else ""
        )

    def _accept_if_valid(self) -> None:
        path = self.path_edit.text().strip()
        problem = ""
        if not path:
            problem = "Choose a model from the store or a GGUF file."
        elif not Path(path).expanduser().is_file():
            problem = f"{path} is not a file."
        elif self.name_edit.text().strip() and not SERVICE_NAME.fullmatch(
            self.name_edit.text().strip()
        ):
            problem = (
                "A name has letters, digits, '.', '_' and '-', and starts with a letter or digit."
            )
        elif path.endswith(".partial"):
            problem = f"{path} is an unfinished download; finish it on the Models page first."
        self.problem.setText(problem)
        if not problem:
            self.accept()

    def values(self) -> ServeRequest:
        def auto(spin: QSpinBox) -> int | None:
            return None if spin.value() == spin.minimum() else spin.value()

        image = self.image_combo.currentText().strip()
        options = ServiceOptions(
            image=None if image in ("", DEFAULT_IMAGE_TEXT) else image,
            ctx_size=self.ctx_spin.value(),
            gpu_layers=auto(self.layers_spin),
            threads=auto(self.threads_spin),
            parallel=auto(self.parallel_spin),
            port=auto(self.port_spin),
        )
        return ServeRequest(
            model=str(Path(self.path_edit.text().strip()).expanduser()),
            engine=str(self.engine_combo.currentData()),
            gpu=str(self.gpu_combo.currentData()) if self.gpu_combo.isEnabled() else "none",
            options=options,
            name=self.name_edit.text().strip() or None,
        )
