// A light touch: filters apply as soon as a select changes (the button still works without JS).
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.form && target.form.classList.contains("filters")) {
    target.form.requestSubmit();
  }
});

// Alert queue: the box in a group's header ticks (or clears) every alert of that group.
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.classList.contains("select-group")) {
    const group = target.closest("details");
    if (group) {
      group.querySelectorAll('input[name="alert_id"]').forEach((box) => {
        box.checked = target.checked;
      });
    }
  }
});
