// Plays the MP4 written by "SpinBot Video Combine" inside the node, and shows its report.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPES = new Set(["SpinBotVideoCombine"]);

function viewUrl(entry) {
  const params = new URLSearchParams({
    filename: entry.filename,
    subfolder: entry.subfolder ?? "",
    type: entry.type ?? "output",
    t: String(Date.now()), // bust the browser cache when a file name is reused
  });
  return api.apiURL(`/view?${params}`);
}

function ensurePlayer(node) {
  if (node.spinbotPlayer) return node.spinbotPlayer;
  const box = document.createElement("div");
  box.style.cssText = "width:100%;display:flex;flex-direction:column;gap:4px;";
  const video = document.createElement("video");
  Object.assign(video, { controls: true, loop: true, muted: true, autoplay: true, playsInline: true });
  video.style.cssText = "width:100%;max-height:100%;border-radius:4px;background:#000;";
  video.addEventListener("loadedmetadata", () => {
    // Grow the node to the video's aspect ratio once the size is known.
    const aspect = video.videoHeight / Math.max(video.videoWidth, 1);
    const width = node.size[0];
    node.setSize([width, Math.max(node.size[1], node.computeSize([width, 0])[1] + width * aspect)]);
    app.graph.setDirtyCanvas(true, true);
  });
  const caption = document.createElement("div");
  caption.style.cssText = "font:11px monospace;opacity:0.75;white-space:pre-wrap;";
  box.append(video, caption);
  const widget = node.addDOMWidget("spinbot_preview", "preview", box, { serialize: false, hideOnZoom: false });
  node.spinbotPlayer = { widget, video, caption };
  return node.spinbotPlayer;
}

app.registerExtension({
  name: "SpinBot.VideoPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODE_TYPES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const entry = message?.spinbot_video?.[0];
      if (!entry) return;
      const player = ensurePlayer(this);
      player.video.src = viewUrl(entry);
      player.caption.textContent = `${entry.subfolder ? entry.subfolder + "/" : ""}${entry.filename}`;
    };
  },
});
