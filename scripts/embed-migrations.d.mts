export function render(): string;
