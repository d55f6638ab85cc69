${input.f + 2}
${input.f?floor}
${-input.f?ceiling}
${(12345678901234567890 * input.n / 0.5)?c}
${input.f?round?string("#,##0.##")}