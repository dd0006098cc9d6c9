// monai-xai case report: NiiVue viewer over the volumes embedded in this page (monai_xai/visualize/report.py).
// Everything is inline: no fetch, no storage API, so the page also works inside MLflow's sandboxed artifact iframe.
(function () {
  "use strict";
  const HEAT_COLORMAPS = ["warm", "hot", "inferno", "plasma", "viridis", "jet", "red"];
  // pure colours: NiiVue shows an overlay channel that is not 0 at full strength
  const OUTLINE_COLOURS = [[0, 255, 0], [255, 0, 255], [255, 255, 255]];
  const COLORMAP_ZERO_TO_MAX_TRANSPARENT_BELOW_MIN = 1;
  const body = document.body;
  const byId = (id) => document.getElementById(id);

  function fail(error) {
    body.dataset.status = "error";
    byId("message").textContent = "This report could not be shown: " + (error && error.message ? error.message : error);
    byId("stills").open = true;
    console.error(error);
  }

  // no viewer here (no WebGL2): the text, the metrics and the still pictures are what the page shows
  function withoutViewer(reason) {
    body.dataset.status = "static";
    byId("message").textContent =
      "The interactive viewer cannot start here (" + reason + "): each map is shown as a still picture below.";
    byId("stills").open = true;
  }

  function option(select, value, label) {
    const item = document.createElement("option");
    item.value = value;
    item.textContent = label || value;
    select.appendChild(item);
  }

  // transparent at the bottom entry (values below cal_min), else one opaque colour: an outline voxel resampled
  // between 0 and 1 keeps the outline's colour
  function colormap(rgb) {
    const [r, g, b] = rgb;
    return { R: [r, r, r], G: [g, g, g], B: [b, b, b], A: [0, 255, 255], I: [0, 1, 255] };
  }

  // the shown method's explanation, metrics row and still
  function explanation(data, method) {
    byId("explained-method").textContent = method;
    byId("text").textContent = data.descriptions[method] || "No description for this method.";
    for (const item of document.querySelectorAll("#metrics tr[data-method], #stills figure[data-method]")) {
      item.classList.toggle("shown", item.dataset.method === method);
    }
  }

  function webgl2() {
    try {
      return Boolean(document.createElement("canvas").getContext("webgl2"));
    } catch (error) {
      return false;
    }
  }

  async function main() {
    const data = JSON.parse(byId("xai-report-data").textContent);
    const volumes = data.volumes;
    const is2D = volumes.spatial_dims === 2;
    const hash = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const state = {
      method: data.methods.includes(hash.get("method")) ? hash.get("method") : data.methods[0],
      colormap: hash.get("colormap") || "warm",
      opacity: hash.has("opacity") ? Number(hash.get("opacity")) : 0.6,
      threshold: hash.has("threshold") ? Number(hash.get("threshold")) : 0.2,
      view: is2D ? "axial" : hash.get("view") || "multiplanar",
      outlines: Object.fromEntries(Object.keys(volumes.masks).map((name) => [name, true])),
    };
    let showMap = null; // the viewer's, once it runs

    const methodSelect = byId("method");
    data.methods.forEach((method) => option(methodSelect, method));
    methodSelect.value = state.method;
    methodSelect.addEventListener("change", () => {
      state.method = methodSelect.value;
      explanation(data, state.method);
      if (showMap) showMap().catch(fail);
      else body.dataset.method = state.method;
    });
    explanation(data, state.method);
    body.dataset.method = state.method;
    if (!webgl2()) {
      withoutViewer("this browser offers no WebGL2");
      return;
    }
    showMap = await startViewer(data, state);
    byId("stills").open = false;
    body.dataset.status = "ready";
  }

  // starts the NiiVue viewer over the page's volumes; returns what redraws it for state.method
  async function startViewer(data, state) {
    const volumes = data.volumes;
    const is2D = volumes.spatial_dims === 2;
    const nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1],
      show3Dcrosshair: true,
      isColorbar: true,
      crosshairColor: [0.3, 0.8, 1, 0.7],
      multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
      multiplanarLayout: niivue.MULTIPLANAR_TYPE.GRID,
      isNearestInterpolation: true,
      logLevel: "error",
    });
    await nv.attachTo("gl");
    nv.onLocationChange = (where) => {
      if (!where || !where.mm) return;
      const mm = Array.from(where.mm).slice(0, 3).map((v) => v.toFixed(1)).join(", ");
      const values = (where.values || []).map((layer) => {
        const name = layer.name ? layer.name.replace(/\.nii\.gz$/, "") : "";
        const value = layer.value;
        return name + " " + (typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : value);
      });
      byId("location").textContent = "crosshair (" + mm + ") mm: " + values.join(", ");
    };

    const load = (base64, name, options) =>
      niivue.NVImage.loadFromBase64(Object.assign({ base64: base64, name: name + ".nii.gz" }, options));
    const image = await load(volumes.image, "image", { colormap: "gray", cal_min: 0, cal_max: 255 });
    image.colorbarVisible = false;
    nv.addVolume(image);

    const outlines = {};
    let colour = 0;
    for (const [name, base64] of Object.entries(volumes.masks)) {
      const id = "xai_outline_" + colour;
      const rgb = OUTLINE_COLOURS[colour % OUTLINE_COLOURS.length];
      nv.addColormap(id, colormap(rgb));
      outlines[name] = await load(base64, name + " outline", { colormap: id, cal_min: 0.5, cal_max: 1, opacity: 1 });
      outlines[name].colormapType = COLORMAP_ZERO_TO_MAX_TRANSPARENT_BELOW_MIN;
      outlines[name].colorbarVisible = false;
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = "rgb(" + rgb.join(",") + ")";
      label.append(box, " ", swatch, name + " outline");
      box.addEventListener("change", () => {
        state.outlines[name] = box.checked;
        layers().catch(fail);
      });
      byId("outlines").appendChild(label);
      colour += 1;
    }

    const maps = {};
    async function heat(method) {
      if (!maps[method]) {
        maps[method] = await load(volumes.maps[method], method, { colormap: state.colormap, cal_min: 0.01, cal_max: 1 });
        maps[method].colormapType = COLORMAP_ZERO_TO_MAX_TRANSPARENT_BELOW_MIN;
      }
      const map = maps[method];
      map.colormap = state.colormap;
      map.opacity = state.opacity;
      map.cal_min = Math.max(0.5 / 255, state.threshold);
      map.cal_max = 1;
      return map;
    }

    // image, then the shown map, then the outlines on top
    async function layers() {
      const map = await heat(state.method);
      const wanted = [image, map, ...Object.keys(outlines).filter((n) => state.outlines[n]).map((n) => outlines[n])];
      for (const volume of [...nv.volumes]) if (!wanted.includes(volume)) nv.removeVolume(volume);
      wanted.forEach((volume, index) => {
        if (!nv.volumes.includes(volume)) nv.addVolume(volume);
        nv.setVolume(volume, index);
      });
      nv.updateGLVolume();
      body.dataset.method = state.method;
      body.dataset.view = state.view;
    }

    function crosshairToPeak() {
      const peak = volumes.peaks[state.method];
      if (!peak) return;
      nv.scene.crosshairPos = nv.mm2frac(peak);
      nv.drawScene();
      nv.createOnLocationChange();
    }

    function view() {
      const types = {
        multiplanar: niivue.SLICE_TYPE.MULTIPLANAR,
        axial: niivue.SLICE_TYPE.AXIAL,
        coronal: niivue.SLICE_TYPE.CORONAL,
        sagittal: niivue.SLICE_TYPE.SAGITTAL,
        render: niivue.SLICE_TYPE.RENDER,
      };
      nv.setSliceType(types[state.view] === undefined ? types.multiplanar : types[state.view]);
      body.dataset.view = state.view;
    }

    const available = nv.colormaps();
    const colormapSelect = byId("colormap");
    HEAT_COLORMAPS.filter((name) => available.includes(name)).forEach((name) => option(colormapSelect, name));
    if (!available.includes(state.colormap)) state.colormap = colormapSelect.options[0].value;
    colormapSelect.value = state.colormap;
    colormapSelect.addEventListener("change", () => {
      state.colormap = colormapSelect.value;
      layers().catch(fail);
    });

    for (const [id, key] of [["opacity", "opacity"], ["threshold", "threshold"]]) {
      const slider = byId(id);
      const shown = byId(id + "-value");
      slider.value = state[key];
      shown.textContent = Number(state[key]).toFixed(2);
      slider.addEventListener("input", () => {
        state[key] = Number(slider.value);
        shown.textContent = state[key].toFixed(2);
        layers().catch(fail);
      });
    }

    const viewSelect = byId("view");
    viewSelect.value = state.view;
    if (is2D) byId("view-control").hidden = true;
    viewSelect.addEventListener("change", () => {
      state.view = viewSelect.value;
      view();
    });

    await layers();
    view();
    crosshairToPeak();
    return () => layers().then(crosshairToPeak);
  }

  main().catch(fail);
})();
