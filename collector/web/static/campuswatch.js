// A light touch: filters apply as soon as a select changes (the button still works without JS).
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.form && target.form.classList.contains("filters")) {
    target.form.requestSubmit();
  }
});
