"""transformers 4.51.3's Qwen2_5_VLForConditionalGeneration.get_rope_index, transcribed for the tests (the
reference qinsight's positions are held to at every release): vision_start tokens find each image or video;
text after one starts one past its largest position."""

import torch


def reference_rope_index(
    input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts, *, ids, merge, tokens_per_second
):
    """``ids``: the image, video and vision_start token ids. Returns (position_ids, deltas of the unpadded rows)."""
    image_id, video_id, start_id = ids
    position_ids = torch.ones(3, *input_ids.shape, dtype=input_ids.dtype)
    image_index = video_index = 0
    deltas = []
    for i, row in enumerate(input_ids):
        tokens = row[attention_mask[i] == 1].tolist()
        kinds = [tokens[k + 1] for k, t in enumerate(tokens) if t == start_id]
        pieces, st = [], 0
        for _ in range(sum(k in (image_id, video_id) for k in kinds)):
            ed_image = tokens.index(image_id, st) if image_id in tokens[st:] else len(tokens) + 1
            ed_video = tokens.index(video_id, st) if video_id in tokens[st:] else len(tokens) + 1
            if ed_image < ed_video:
                t, h, w = image_grid_thw[image_index].tolist()
                second, ed = 0, ed_image
                image_index += 1
            else:
                t, h, w = video_grid_thw[video_index].tolist()
                second = float(second_per_grid_ts[video_index]) if second_per_grid_ts is not None else 1.0
                ed = ed_video
                video_index += 1
            gh, gw = h // merge, w // merge
            st_idx = int(pieces[-1].max()) + 1 if pieces else 0
            pieces.append(torch.arange(ed - st).view(1, -1).expand(3, -1) + st_idx)
            time = torch.arange(t).view(-1, 1).expand(-1, gh * gw) * second * tokens_per_second
            t_index = time.long().flatten()
            h_index = torch.arange(gh).view(1, -1, 1).expand(t, -1, gw).flatten()
            w_index = torch.arange(gw).view(1, 1, -1).expand(t, gh, -1).flatten()
            pieces.append(torch.stack([t_index, h_index, w_index]) + (ed - st) + st_idx)
            st = ed + t * gh * gw
        if st < len(tokens):
            st_idx = int(pieces[-1].max()) + 1 if pieces else 0
            pieces.append(torch.arange(len(tokens) - st).view(1, -1).expand(3, -1) + st_idx)
        found = torch.cat(pieces, dim=1)
        position_ids[:, i, attention_mask[i] == 1] = found
        deltas.append(int(found.max()) + 1 - len(tokens))
    return position_ids, deltas
