export function render(): string;
export function writeIfChanged(path: string, text: string): boolean;
