# Hugging Face Docker Space (or any container host): the web app and the exported models only.
# Build: docker build -t cardscan-demo .   Run: docker run -p 7860:7860 cardscan-demo

FROM node:20-slim AS ort
WORKDIR /demo
COPY demo/package.json demo/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim
# Spaces run the container as uid 1000.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app
COPY requirements-demo.txt ./
RUN pip install --no-cache-dir -r requirements-demo.txt
COPY --chown=user demo.py ./
COPY --chown=user demo/index.html demo/bench.html demo/package.json ./demo/
COPY --chown=user demo/js ./demo/js
COPY --chown=user demo/css ./demo/css
COPY --chown=user demo/assets ./demo/assets
COPY --chown=user --from=ort /demo/node_modules/onnxruntime-web/dist ./demo/node_modules/onnxruntime-web/dist
# The app's models only (demo/js/models.json; tests/test_demo_server.py checks the two agree).
COPY --chown=user train/exported_models/card_segmentation.onnx train/exported_models/card_segmentation_fp32.onnx \
     train/exported_models/card_corners.onnx train/exported_models/card_corners_fp32.onnx \
     train/exported_models/card_corners_refiner.onnx ./train/exported_models/
USER user
ENV PORT=7860
EXPOSE 7860
CMD ["python", "demo.py", "--host", "0.0.0.0"]
