// The QC report's viewers: one NiiVue instance per panel, all showing the three planes
// and sharing one crosshair. Reads window.CLADE_REPORT (volumes.js, written by
// clade_jax/report): the volumes are embedded as base64 NIfTI because Chromium blocks
// fetch/XHR of file:// URLs, and the report must open from a double click, offline.
(async function () {
  const report = window.CLADE_REPORT;
  const Niivue = niivue.Niivue;
  const NVImage = niivue.NVImage;
  const viewers = [];
  for (const panel of report.panels) {
    const canvas = document.getElementById(panel.canvas);
    const nv = new Niivue({
      backColor: [0, 0, 0, 1],
      crosshairColor: [1.0, 0.78, 0.0, 0.9],
      crosshairWidth: 1,
      show3Dcrosshair: false,
      isColorbar: panel.overlay !== null,
      multiplanarShowRender: 0,  // SHOW_RENDER.NEVER: three planes, no 3D render
      multiplanarLayout: 3,  // MULTIPLANAR_TYPE.ROW
      isOrientationTextVisible: true,
      logLevel: 'error',
    });
    await nv.attachToCanvas(canvas);
    const base = await NVImage.loadFromBase64({
      base64: report.volumes[panel.volume], name: panel.volume + '.nii.gz',
      colormap: 'gray', cal_min: report.windows[0].lo, cal_max: report.windows[0].hi,
      colorbarVisible: false,
    });
    nv.addVolume(base);
    if (panel.overlay !== null) {
      const scale = report.overlay_scale;
      const overlay = await NVImage.loadFromBase64({
        base64: report.volumes[panel.overlay], name: panel.overlay + '.nii.gz',
        colormap: 'warm', colormapNegative: 'winter', opacity: 0.8,
        cal_min: scale.threshold, cal_max: scale.max,
        cal_minNeg: -scale.max, cal_maxNeg: -scale.threshold,
      });
      nv.addVolume(overlay);
    }
    if (panel.nearest) nv.setInterpolation(true);  // true: nearest neighbour
    nv.setSliceType(nv.sliceTypeMultiplanar);
    const readout = document.getElementById(panel.canvas + '-value');
    nv.onLocationChange = (where) => { readout.textContent = where.string; };
    viewers.push(nv);
  }
  // Each viewer drives all others: a click or drag in any panel moves every crosshair
  // (in world mm, so panels on different grids stay on one point) and pans/zooms alike.
  for (const nv of viewers) {
    nv.broadcastTo(viewers.filter((other) => other !== nv), { crosshair: true, zoomPan: true });
  }
  function setWindow(index) {
    const w = report.windows[index];
    for (const nv of viewers) {
      nv.volumes[0].cal_min = w.lo;
      nv.volumes[0].cal_max = w.hi;
      nv.updateGLVolume();
    }
    document.querySelectorAll('.window-button').forEach((button, i) => {
      button.classList.toggle('active', i === index);
    });
  }
  document.querySelectorAll('.window-button').forEach((button, i) => {
    button.addEventListener('click', () => setWindow(i));
  });
  const opacity = document.getElementById('overlay-opacity');
  if (opacity) {
    opacity.addEventListener('input', () => {
      for (const nv of viewers) {
        if (nv.volumes.length > 1) nv.setOpacity(1, opacity.value / 100);
      }
    });
  }
  window.cladeViewers = viewers;  // for tests and the browser console
  document.body.dataset.viewersReady = String(viewers.length);
})().catch((error) => {
  console.error('QC report viewer: ' + error);
  document.body.dataset.viewersReady = 'failed';
});
